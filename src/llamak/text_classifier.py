"""A small text classifier that ships as arrays: hashed n-gram features and logistic regression.

Used twice: the serving guard's request classifier (`llamak.serve.classifier`) and the profanity
filter's sentence classifier (`llamak.data.profanity_model`). Features are hashed character n-grams
(1–5, within words: robust to typos, missing spaces, masking and Korean endings) and word uni/bigrams,
log-scaled and L2-normalised; weights are fitted by scikit-learn's logistic regression and saved as
an `.npz` of arrays (no pickle). Scoring one short text takes ~1 ms on a CPU.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamak.errors import LlamakError

CHAR_FEATURES = 2**19
WORD_FEATURES = 2**17


@functools.cache
def _vectorizers():
    from sklearn.feature_extraction.text import HashingVectorizer

    common = dict(alternate_sign=False, norm=None, lowercase=True, dtype=np.float32)
    return (HashingVectorizer(analyzer="char_wb", ngram_range=(1, 5), n_features=CHAR_FEATURES, **common),
            HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=WORD_FEATURES, token_pattern=r"(?u)\b\w+\b", **common))


def features(texts: list[str]):
    """Sparse rows: log-scaled, L2-normalised counts of character and word n-grams."""
    import scipy.sparse as sp
    from sklearn.preprocessing import normalize

    chars, words = _vectorizers()
    x = sp.hstack([chars.transform(texts), words.transform(texts)]).tocsr()
    x.data = np.log1p(x.data)
    return normalize(x)


@dataclass
class TextClassifier:
    coef: np.ndarray  # (CHAR_FEATURES + WORD_FEATURES,)
    intercept: float
    threshold: float  # on the probability
    info: dict

    def scores(self, texts: list[str]) -> np.ndarray:
        """Probability of the positive class (harmful, offensive) for each text."""
        return sigmoid(features(texts) @ self.coef + self.intercept)

    def harmful(self, text: str) -> tuple[bool, float]:
        """(score ≥ threshold, score) for one text."""
        score = float(self.scores([text])[0])
        return score >= self.threshold, score

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, coef=self.coef.astype(np.float16), intercept=np.float32(self.intercept),
                            threshold=np.float32(self.threshold), info=np.frombuffer(json.dumps(self.info).encode(), dtype=np.uint8))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "TextClassifier":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["coef"].astype(np.float32), float(z["intercept"]), float(z["threshold"]), json.loads(z["info"].tobytes()))
        except (OSError, KeyError, ValueError) as e:
            raise LlamakError(f"{path}: not a llamak text classifier ({e}); build one with `llamak guard train` or `llamak data profanity-train`") from None


def noisy(text: str, rng: random.Random) -> str:
    """A typo'd copy: a few characters dropped, doubled or swapped, some spaces removed (how people type)."""
    chars = list(text)
    for _ in range(max(1, len(chars) // 25)):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.3:
            del chars[i]
        elif op < 0.5:
            chars.insert(i, chars[i])
        elif op < 0.7 and i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        elif chars[i] == " ":
            del chars[i]
    return "".join(chars) or text


def fit(texts: list[str], labels: list[bool], c: float = 16.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """Logistic regression on the texts plus one typo'd copy of each (classes balanced): (coef, intercept)."""
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    texts = list(texts) + [noisy(t, rng) for t in texts]
    labels = np.array(list(labels) * 2, dtype=int)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(features(texts), labels)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))

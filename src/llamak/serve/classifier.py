"""The guard's learned prompt classifier: harmful request or not, offline, ~1 ms on a CPU.

Features are hashed character n-grams (1–5, within words: robust to typos, missing spaces and
Korean endings) and word uni/bigrams, weighted by logistic regression (scikit-learn). The weights
ship as `resources/guard/classifier.npz` (arrays only, no pickle), trained by

    llamak guard train                 # resources/guard/train*.jsonl + the safety suite → classifier.npz
    llamak guard eval tests/data/guard_heldout2.jsonl

The decision threshold is chosen by 5-fold cross-validation on the training prompts: the lowest
score that keeps cross-validated false blocks ≤ `max_false_block` — never on a held-out set.
"""

from __future__ import annotations

import functools
import importlib.resources
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
class PromptClassifier:
    coef: np.ndarray  # (CHAR_FEATURES + WORD_FEATURES,)
    intercept: float
    threshold: float  # on the probability
    info: dict

    def scores(self, texts: list[str]) -> np.ndarray:
        """Probability that each text is a harmful request."""
        logits = features(texts) @ self.coef + self.intercept
        return 1 / (1 + np.exp(-logits))

    def harmful(self, text: str) -> tuple[bool, float]:
        score = float(self.scores([text])[0])
        return score >= self.threshold, score

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, coef=self.coef.astype(np.float16), intercept=np.float32(self.intercept),
                            threshold=np.float32(self.threshold), info=np.frombuffer(json.dumps(self.info).encode(), dtype=np.uint8))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | None = None) -> "PromptClassifier":
        path = path or default_path()
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["coef"].astype(np.float32), float(z["intercept"]), float(z["threshold"]), json.loads(z["info"].tobytes()))
        except (OSError, KeyError, ValueError) as e:
            raise LlamakError(f"{path}: not a guard classifier ({e}); build one with `llamak guard train`") from None


def resource(name: str) -> Path:
    return Path(str(importlib.resources.files("llamak").joinpath("resources", "guard", name)))


def default_path() -> Path:
    return resource("classifier.npz")


def default_training_files() -> list[Path]:
    """The prompts the shipped classifier learns from: two authors' sets and the safety suite."""
    suite = Path(str(importlib.resources.files("llamak").joinpath("resources", "eval", "data", "safety_prompts.jsonl")))
    return [resource("train.jsonl"), resource("train_more.jsonl"), suite]


@functools.cache
def default_classifier() -> PromptClassifier:
    return PromptClassifier.load()


# ------------------------------------------------------------------------------ training


def read_prompts(path: Path) -> list[dict]:
    """Rows with `prompt` and `harmful` (bool) from a JSONL file; a bad row is a one-line error."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"prompt": str(row["prompt"]), "harmful": bool(row["harmful"]), **{k: row[k] for k in ("lang", "category", "style") if k in row}})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LlamakError(f"{path}:{n}: expected a JSON object with 'prompt' and 'harmful' ({e})") from None
    if not rows:
        raise LlamakError(f"{path}: no prompts")
    return rows


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


def fit(rows: list[dict], c: float = 16.0, seed: int = 0):
    """Logistic regression on the rows plus one typo'd copy of each (sample weights balanced by class)."""
    from sklearn.linear_model import LogisticRegression

    rng = random.Random(seed)
    texts = [r["prompt"] for r in rows] + [noisy(r["prompt"], rng) for r in rows]
    labels = np.array([r["harmful"] for r in rows] * 2, dtype=int)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(features(texts), labels)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def cross_validated_scores(rows: list[dict], folds: int = 5, c: float = 16.0, seed: int = 0) -> np.ndarray:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    scores = np.zeros(len(rows))
    for k in range(folds):
        test = set(order[k::folds])
        coef, intercept = fit([r for i, r in enumerate(rows) if i not in test], c, seed)
        idx = sorted(test)
        scores[idx] = 1 / (1 + np.exp(-(features([rows[i]["prompt"] for i in idx]) @ coef + intercept)))
    return scores


def rates(scores: np.ndarray, harmful: np.ndarray, threshold: float) -> tuple[float, float]:
    """(block rate on harmful prompts, false-block rate on benign ones)."""
    blocked = scores >= threshold
    return float(blocked[harmful].mean()), float(blocked[~harmful].mean())


def train(rows: list[dict], max_false_block: float = 0.04, c: float = 16.0, seed: int = 0) -> PromptClassifier:
    harmful = np.array([r["harmful"] for r in rows])
    cv = cross_validated_scores(rows, c=c, seed=seed)
    candidates = sorted(set(np.round(cv, 4)))
    threshold = next((t for t in candidates if rates(cv, harmful, t)[1] <= max_false_block), 0.5)
    block, false_block = rates(cv, harmful, threshold)
    coef, intercept = fit(rows, c, seed)
    info = {"prompts": len(rows), "harmful": int(harmful.sum()), "c": c, "seed": seed, "max_false_block": max_false_block,
            "cv_block": round(block, 4), "cv_false_block": round(false_block, 4),
            "features": f"char_wb 1-5 ({CHAR_FEATURES}) + word 1-2 ({WORD_FEATURES}), log tf, l2"}
    return PromptClassifier(coef, intercept, float(threshold), info)

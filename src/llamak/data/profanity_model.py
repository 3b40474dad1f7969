"""The profanity filter's learned sentence classifier: what a lexicon cannot list.

Lexicon rules catch disguised spellings and ordinary insults but not sexual harassment or threats
worded without offensive words ("what colour is your underwear", "밤길 조심해라"); on held-out sets
they recall ~0.6–0.7. A `TextClassifier` (hashed character/word n-grams, logistic regression) trained
on labelled sentences flags those; `ProfanityFilter(model=True)` adds its hits as category
`offensive`, one per sentence. ~1 ms a sentence: on for short texts and the guard's checks, opt-in
for corpora (`llamak data clean --profanity-model`).

    llamak data profanity-train --data 'tests/data/profanity_*.jsonl' --exclude tests/data/profanity_heldout6.jsonl \\
        --validation tests/data/profanity_heldout5.jsonl

The threshold is chosen on `--validation` (a set the first fit does not see): the lowest score whose
false-positive rate stays ≤ `max_false_positive` in every language; the shipped weights are then
refitted on every set, validation included, with that threshold.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from pathlib import Path

import numpy as np

from llamak.files import read_labelled
from llamak.text_classifier import TextClassifier, features, fit, sigmoid

_SENTENCE = re.compile(r"[^.!?。\n]+[.!?。]*")


def default_path() -> Path:
    return Path(str(importlib.resources.files("llamak").joinpath("resources", "profanity", "classifier.npz")))


@functools.cache
def default_model() -> TextClassifier:
    return TextClassifier.load(default_path())


def sentences(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of `text` (a line without an end mark is one sentence)."""
    return [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if m.group().strip()]


def read_sentences(path: Path) -> list[dict]:
    """Rows with `text`, `offensive` and `lang` (from the text when not given) of a labelled JSONL file."""
    rows = read_labelled(path, "text", "offensive", ("lang",))
    for row in rows:
        row.setdefault("lang", "ko" if re.search("[가-힣]", row["text"]) else "en")
    return rows


def threshold_for(scores: np.ndarray, rows: list[dict], max_false_positive: float) -> float:
    """The lowest score keeping the false-positive rate ≤ max_false_positive in every language."""
    offensive = np.array([r["offensive"] for r in rows])
    langs = {r["lang"] for r in rows}
    for t in sorted(set(np.round(scores, 4))):
        flagged = scores >= t
        if all(flagged[(~offensive) & np.array([r["lang"] == lang for r in rows])].mean() <= max_false_positive for lang in langs):
            return float(t)
    return 1.0


def train(rows: list[dict], validation: list[dict], max_false_positive: float = 0.02, c: float = 16.0, seed: int = 0) -> TextClassifier:
    coef, intercept = fit([r["text"] for r in rows], [r["offensive"] for r in rows], c, seed)
    scores = sigmoid(features([r["text"] for r in validation]) @ coef + intercept)
    threshold = threshold_for(scores, validation, max_false_positive)
    flagged = scores >= threshold
    offensive = np.array([r["offensive"] for r in validation])
    everything = rows + validation
    coef, intercept = fit([r["text"] for r in everything], [r["offensive"] for r in everything], c, seed)
    info = {"sentences": len(everything), "offensive": sum(r["offensive"] for r in everything), "c": c, "seed": seed,
            "max_false_positive": max_false_positive, "validation_recall": round(float(flagged[offensive].mean()), 4),
            "validation_false_positive": round(float(flagged[~offensive].mean()), 4)}
    return TextClassifier(coef, intercept, threshold, info)

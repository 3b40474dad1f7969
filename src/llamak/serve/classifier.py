"""The guard's learned prompt classifier: harmful request or not, offline, ~1 ms on a CPU.

A `llamak.text_classifier.TextClassifier` (hashed character/word n-grams, logistic regression)
trained on labelled Korean/English requests. The weights ship as `resources/guard/classifier.npz`
(arrays only, no pickle), trained by

    llamak guard train --validation tests/data/guard_heldout2.jsonl   # → the shipped classifier.npz
    llamak guard eval tests/data/guard_heldout3.jsonl

The decision threshold is the lowest score that keeps false blocks ≤ `max_false_block` on a
validation set the first fit does not see (`--validation`; the shipped weights use
tests/data/guard_heldout2.jsonl, then refit on it too), or by 5-fold cross-validation without one —
never on the held-out set that measures it.
"""

from __future__ import annotations

import functools
import importlib.resources
import random
from pathlib import Path

import numpy as np

from llamak.files import read_labelled
from llamak.text_classifier import CHAR_FEATURES, WORD_FEATURES, TextClassifier, features, fit, sigmoid


def resource(name: str) -> Path:
    return Path(str(importlib.resources.files("llamak").joinpath("resources", "guard", name)))


def default_path() -> Path:
    return resource("classifier.npz")


def default_training_files() -> list[Path]:
    """The prompts the shipped classifier learns from: two authors' sets and the safety suite."""
    suite = Path(str(importlib.resources.files("llamak").joinpath("resources", "eval", "data", "safety_prompts.jsonl")))
    return [resource("train.jsonl"), resource("train_more.jsonl"), suite]


@functools.cache
def default_classifier() -> TextClassifier:
    return TextClassifier.load(default_path())


# ------------------------------------------------------------------------------ training


def read_prompts(path: Path) -> list[dict]:
    """Rows with `prompt` and `harmful` (and `lang`, `category`, `style` when given) of a JSONL file."""
    return read_labelled(path, "prompt", "harmful", ("lang", "category", "style"))


def cross_validated_scores(rows: list[dict], folds: int = 5, c: float = 16.0, seed: int = 0) -> np.ndarray:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    scores = np.zeros(len(rows))
    for k in range(folds):
        test = set(order[k::folds])
        train_rows = [r for i, r in enumerate(rows) if i not in test]
        coef, intercept = fit([r["prompt"] for r in train_rows], [r["harmful"] for r in train_rows], c, seed)
        idx = sorted(test)
        scores[idx] = sigmoid(features([rows[i]["prompt"] for i in idx]) @ coef + intercept)
    return scores


def rates(scores: np.ndarray, harmful: np.ndarray, threshold: float) -> tuple[float, float]:
    """(block rate on harmful prompts, false-block rate on benign ones)."""
    blocked = scores >= threshold
    return float(blocked[harmful].mean()), float(blocked[~harmful].mean())


def train(rows: list[dict], validation: list[dict] | None = None, max_false_block: float = 0.04, c: float = 16.0, seed: int = 0) -> TextClassifier:
    """The threshold is the lowest score whose false-block rate stays ≤ `max_false_block`: on
    `validation` (prompts the first fit does not see; the weights are then refitted on them too), or
    without one, on 5-fold cross-validated scores of the training prompts."""
    if validation:
        coef, intercept = fit([r["prompt"] for r in rows], [r["harmful"] for r in rows], c, seed)
        scored, scores = validation, sigmoid(features([r["prompt"] for r in validation]) @ coef + intercept)
    else:
        scored, scores = rows, cross_validated_scores(rows, c=c, seed=seed)
    harmful = np.array([r["harmful"] for r in scored])
    threshold = next((t for t in sorted(set(np.round(scores, 4))) if rates(scores, harmful, t)[1] <= max_false_block), 0.5)
    block, false_block = rates(scores, harmful, threshold)
    everything = rows + (validation or [])
    coef, intercept = fit([r["prompt"] for r in everything], [r["harmful"] for r in everything], c, seed)
    info = {"prompts": len(everything), "harmful": sum(r["harmful"] for r in everything), "c": c, "seed": seed, "max_false_block": max_false_block,
            "threshold_from": "validation" if validation else "5-fold cross-validation", "block": round(block, 4), "false_block": round(false_block, 4),
            "features": f"char_wb 1-5 ({CHAR_FEATURES}) + word 1-2 ({WORD_FEATURES}), log tf, l2"}
    return TextClassifier(coef, intercept, float(threshold), info)

"""The smollm2-ko table: what Korean vocabulary expansion bought.

    llamak run recipes/smollm2-ko.yaml && llamak run recipes/smollm2-ko-novocab.yaml
    python bench/vocab_ko.py                       # from the two runs' eval stages
    python bench/vocab_ko.py --evals runs/compare  # from `llamak eval … --out runs/compare/LABEL` folders

Prints a markdown table (bits/char, chars/token, Korean answers, ko-mini, en-mini per model) and the
issue's goals for the last model against the first (the original SmolLM2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llamak.evaluate.runner import scores

METRICS = [
    ("bits/ko_bits_per_char", "ko bits/char", 3),
    ("bits/en_bits_per_char", "en bits/char", 3),
    ("bits/ko_chars_per_token", "ko chars/token", 2),
    ("bits/ko_answers_in_korean", "Korean answers", 2),
    ("ko-mini", "ko-mini", 3),
    ("en-mini", "en-mini", 3),
]


def from_runs(runs: Path) -> dict[str, dict]:
    rows = {}
    for name in ("smollm2-ko", "smollm2-ko-novocab"):
        comparison = json.loads((runs / name / "eval" / "comparison.json").read_text())
        for model in comparison["models"]:
            label = "original SmolLM2" if model == "base" else f"{name}: {model}"
            rows.setdefault(label, {k: v.get(model) for k, v in comparison["scores"].items()})
    return rows


def from_evals(folder: Path, labels: list[str]) -> dict[str, dict]:
    return {label: scores(json.loads((folder / label / "eval.json").read_text())["suites"]) for label in labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--evals", type=Path, help="folder of `llamak eval --out` results, one subfolder per model")
    parser.add_argument("--labels", default="base,vocab,embeddings,cpt,novocab-cpt", help="subfolders of --evals, in table order")
    args = parser.parse_args()
    rows = from_evals(args.evals, args.labels.split(",")) if args.evals else from_runs(args.runs)
    print("| model | " + " | ".join(title for _, title, _ in METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for label, values in rows.items():
        cells = ["—" if values.get(k) is None else f"{values[k]:.{digits}f}" for k, _, digits in METRICS]
        print(f"| {label} | " + " | ".join(cells) + " |")
    (first, original), *others = rows.items()
    for label, values in others:
        ko = values["bits/ko_bits_per_char"] / original["bits/ko_bits_per_char"] - 1
        en = values["bits/en_bits_per_char"] / original["bits/en_bits_per_char"] - 1
        print(f"{label} vs {first}: ko bits/char {100 * ko:+.1f} % (goal ≤ −30 %), en bits/char {100 * en:+.1f} % (goal ≤ +2 %), "
              f"ko chars/token {values['bits/ko_chars_per_token']:.2f} (goal ≥ 1.5), "
              f"Korean answers {values['bits/ko_answers_in_korean']:.2f} (goal ≥ 0.90)")


if __name__ == "__main__":
    main()

"""The smollm2-ko table: what Korean vocabulary expansion bought, from two finished recipe runs.

    llamak run recipes/smollm2-ko.yaml && llamak run recipes/smollm2-ko-novocab.yaml
    python bench/vocab_ko.py            # markdown table + the issue's goals, vs the original SmolLM2

Reads runs/<name>/eval/comparison.json (the eval stage's scores per model) and the stage timings
from runs/<name>/manifest.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METRICS = [
    ("bits/ko_bits_per_char", "ko bits/char", 3),
    ("bits/en_bits_per_char", "en bits/char", 3),
    ("bits/ko_chars_per_token", "ko chars/token", 2),
    ("bits/ko_answers_in_korean", "Korean answers", 2),
    ("ko-mini", "ko-mini", 3),
    ("en-mini", "en-mini", 3),
]


def load(run: Path) -> tuple[dict, dict]:
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    return comparison, manifest


def seconds(manifest: dict) -> float:
    return sum(s.get("seconds") or 0 for s in manifest.get("stages", {}).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    args = parser.parse_args()
    rows = []
    for name in ("smollm2-ko", "smollm2-ko-novocab"):
        comparison, manifest = load(args.runs / name)
        scores = comparison["scores"]
        for model in comparison["models"]:
            if name.endswith("novocab") and model == "base":
                continue  # the same original model as in smollm2-ko
            label = "original SmolLM2" if model == "base" else f"{name}: {model}"
            rows.append([label] + [scores.get(key, {}).get(model) for key, _, _ in METRICS])
        print(f"{name}: {seconds(manifest) / 60:.0f} minutes of stages")
    print()
    print("| model | " + " | ".join(title for _, title, _ in METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for label, *values in rows:
        cells = ["—" if v is None else f"{v:.{digits}f}" for v, (_, _, digits) in zip(values, METRICS)]
        print(f"| {label} | " + " | ".join(cells) + " |")
    original = rows[0]
    for label, *values in rows[1:]:
        if label.endswith(": merge"):
            ko, en, density, answers = values[0] / original[1] - 1, values[1] / original[2] - 1, values[2], values[3]
            print(f"\n{label}: ko bits/char {100 * ko:+.1f} % (goal ≤ −30 %), en bits/char {100 * en:+.1f} % (goal ≤ +2 %), "
                  f"ko chars/token {density:.2f} (goal ≥ 1.5), Korean answers {answers:.2f} (goal ≥ 0.90)")


if __name__ == "__main__":
    main()

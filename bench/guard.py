"""Benchmark: the guard's cost per request — rules alone, rules + the learned classifier.

    .venv/bin/python bench/guard.py

Times `Guard.check_input` on the 240 prompts of tests/data/guard_heldout3.jsonl (after one warm-up
pass: weights and Kiwi load once per process), in this process, one after another (what a server
does per request), and prints milliseconds per prompt (median and p95) and the classifier's
share. The issue's budget: ≤ 10 ms per prompt on a CPU.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from llamak.serve.classifier import default_classifier, read_prompts
from llamak.serve.guard import Guard

ROOT = Path(__file__).resolve().parents[1]


def per_prompt_ms(check, prompts: list[str], rounds: int = 3) -> list[float]:
    times = []
    for _ in range(rounds):
        for p in prompts:
            started = time.perf_counter()
            check(p)
            times.append(1000 * (time.perf_counter() - started))
    return times


def main() -> None:
    prompts = [r["prompt"] for r in read_prompts(ROOT / "tests/data/guard_heldout3.jsonl")]
    rules, both = Guard("block", classifier=False), Guard("block")
    for p in prompts:  # warm-up: Kiwi, the RE2 automata, the classifier's weights
        both.check_input(p)
    runs = {"rules": per_prompt_ms(rules.check_input, prompts), "rules+classifier": per_prompt_ms(both.check_input, prompts),
            "classifier alone": per_prompt_ms(default_classifier().harmful, prompts)}
    print(f"{len(prompts)} prompts × 3 rounds, one at a time")
    print(f"{'check':18} {'median ms':>10} {'p95 ms':>8}")
    for name, t in runs.items():
        print(f"{name:18} {statistics.median(t):10.2f} {statistics.quantiles(t, n=20)[-1]:8.2f}")


if __name__ == "__main__":
    main()

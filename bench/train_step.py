"""Benchmark: CPT step time with `trainable: inserted` vs `all`, and how full packed batches are.

    .venv/bin/python bench/train_step.py [--steps 8] [--model zoo:tiny-base]

On the same expanded model (LLaMA-Pro, +2 blocks) and the bundled corpus, times `--steps` CPT
steps per mode on TRL's SFTTrainer (first step excluded as warm-up; modes alternate over two
rounds, best kept). Goal from the issue: inserted/all step time ≤ 0.7.
Then the useful-token fraction: packed padding-free batches (bfd_split) hold only real tokens;
a padded batch of the same documents (cut to seq_len, padded to the longest in its batch) wastes
the rest. Goal ≥ 0.98 for packing.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from transformers import TrainerCallback

from llamak.surgery.expand import expand
from llamak.train.cpt import CptConfig, build_corpus, make_trainer
from llamak.zoo import resolve_model


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.times.append(time.perf_counter() - self._t)


def step_time(model: Path, mode: str, steps: int, work: Path) -> float:
    config = CptConfig(
        trainable=mode, corpus={"ko": ["data/ko/*.jsonl"], "en": ["data/en/*.jsonl"]}, mix={"ko": 0.5, "en": 0.5},
        max_steps=steps + 1, seq_len=128, batch_size=4, save_steps=10_000, logging_steps=10_000,
    )
    trainer, *_ = make_trainer(config, model, work / f"ck-{mode}")
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    return min(sum(timer.times[1:]) / len(timer.times[1:]), float("inf"))


def padded_fraction(lengths: list[int], seq_len: int, batch: int, seed: int = 0) -> float:
    chunks = [min(seq_len, n - i) for n in lengths for i in range(0, n, seq_len)]
    random.Random(seed).shuffle(chunks)
    real = padded = 0
    for i in range(0, len(chunks), batch):
        group = chunks[i : i + batch]
        real += sum(group)
        padded += max(group) * len(group)
    return real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:tiny-base")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="llamak-bench-"))
    base = resolve_model(args.model)
    expanded = work / "expanded"
    expand(base, expanded, blocks=2, progress=False)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy2(f, expanded / f.name)

    best: dict[str, float] = {}
    for round_ in range(2):
        for mode in ("inserted", "all") if round_ == 0 else ("all", "inserted"):
            t = step_time(expanded, mode, args.steps, work / str(round_))
            best[mode] = min(best.get(mode, t), t)
    print(f"\nCPT step time on {args.model} expanded (+2 blocks), 4 × 128 tokens, {args.steps} timed steps:")
    for mode, t in best.items():
        print(f"  trainable: {mode:<9} {t:.3f} s/step")
    print(f"  inserted / all = {best['inserted'] / best['all']:.2f}   (goal ≤ 0.70)")

    config = CptConfig(corpus={"ko": ["data/ko/*.jsonl"], "en": ["data/en/*.jsonl"]}, mix={"ko": 0.5, "en": 0.5},
                       max_steps=1, seq_len=128, batch_size=4)
    trainer, tokenizer, *_ = make_trainer(config, expanded, work / "ck-pack")
    rows = [len(r) for r in trainer.train_dataset["input_ids"]]
    packed = sum(rows) / (len(rows) * config.seq_len)
    texts, _ = build_corpus(config, tokenizer)
    docs = [len(ids) + 1 for ids in tokenizer(texts)["input_ids"]]  # + EOS, as in training
    print(f"\nuseful-token fraction (seq_len {config.seq_len}, batch {config.batch_size}):")
    print(f"  packed, padding-free (bfd_split): {packed:.4f}   (goal ≥ 0.98; padding-free batches carry no pad tokens)")
    print(f"  padded per document:              {padded_fraction(docs, config.seq_len, config.batch_size):.4f}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

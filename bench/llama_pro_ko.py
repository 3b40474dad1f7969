"""Benchmark: the LLaMA-Pro claim at small scale — add Korean, keep English.

    .venv/bin/python bench/llama_pro_ko.py [--steps 40] [--blocks 6] [--eval-tokens 8192]

On real weights (`zoo:smollm2-135m-instruct`, 30 layers): expand with `--blocks` identity blocks,
then continue pre-training on the bundled Korean corpus (data/ko) twice with the same token budget —
`trainable: inserted` (LLaMA-Pro) and `trainable: all` (plain CPT) — and report held-out perplexity
(data/heldout, topics absent from training) in Korean and English before and after each.
Goal from the issue: inserted-only cuts Korean PPL substantially while English PPL moves ≤ 2 %, and
forgets less English than `all`. Takes 10–20 minutes on 2 CPU cores.

With `--suites ko-mini,en-mini,long,safety` the three models (base, inserted, all) also go through
`llamak eval`'s suites (the issue-8 table: Korean gain and English retention per stage); another
10–20 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from llamak.surgery.expand import expand
from llamak.train.common import read_jsonl
from llamak.train.cpt import CptConfig, run_cpt
from llamak.zoo import resolve_model


@torch.no_grad()
def perplexity(model_dir: Path, lang: str, max_tokens: int, seq_len: int = 256) -> float:
    """Token-level perplexity on the first `max_tokens` tokens of resources/eval/data/heldout_<lang>.jsonl."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids: list[int] = []
    for row in read_jsonl(Path(f"src/llamak/resources/eval/data/heldout_{lang}.jsonl"), "text"):
        ids += tokenizer(row["text"] + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
    ids = ids[:max_tokens]
    nll, count = 0.0, 0
    for start in range(0, len(ids) - 1, seq_len):
        chunk = torch.tensor([ids[start : start + seq_len]])
        if chunk.shape[1] < 2:
            break
        out = model(chunk, labels=chunk)
        n = chunk.shape[1] - 1
        nll += out.loss.item() * n
        count += n
    return math.exp(nll / count)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--suites", default="", help="also evaluate every model on these suites (comma-separated)")
    ap.add_argument("--eval-limit", type=int, default=None, help="items per task for --suites")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    logging.disable(logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="llamak-bench-"))
    base = resolve_model(args.model)
    expanded = work / "expanded"
    expand(base, expanded, blocks=args.blocks, progress=False)
    results = {"base": {lang: perplexity(base, lang, args.eval_tokens) for lang in ("ko", "en")}}
    seconds = {}
    for mode in ("inserted", "all"):
        config = CptConfig(
            trainable=mode, corpus={"ko": ["data/ko/*.jsonl"]}, max_steps=args.steps, batch_size=args.batch_size,
            seq_len=args.seq_len, learning_rate=args.lr, save_steps=10_000, logging_steps=10, seed=0,
        )
        started = time.time()
        metrics = run_cpt(config, expanded, work / mode)
        seconds[mode] = time.time() - started
        results[mode] = {lang: perplexity(work / mode, lang, args.eval_tokens) for lang in ("ko", "en")}
        results[mode]["trainable_share"] = metrics["trainable_share"]
        results[mode]["tokens"] = metrics["num_input_tokens_seen"]

    b = results["base"]
    print(f"\n{args.model} + {args.blocks} blocks, CPT on data/ko: {args.steps} steps × {args.batch_size} × {args.seq_len} tokens, lr {args.lr}")
    print(f"held-out perplexity on the first {args.eval_tokens} tokens of src/llamak/resources/eval/data/heldout_{{ko,en}}.jsonl\n")
    print("| model | trainable | Korean PPL | Δ ko | English PPL | Δ en | CPT time |")
    print("|---|---|---|---|---|---|---|")
    print(f"| base (= expanded, identity blocks) | – | {b['ko']:.2f} | – | {b['en']:.2f} | – | – |")
    for mode, label in (("inserted", "LLaMA-Pro: inserted blocks only"), ("all", "plain CPT: all parameters")):
        r = results[mode]
        print(f"| {label} | {100 * r['trainable_share']:.1f}% | {r['ko']:.2f} | {100 * (r['ko'] / b['ko'] - 1):+.1f}% "
              f"| {r['en']:.2f} | {100 * (r['en'] / b['en'] - 1):+.1f}% | {seconds[mode]:.0f} s |")
    comparison = None
    if args.suites:
        from llamak.evaluate.runner import EvalSettings, compare, evaluate_model

        settings = EvalSettings(limit=args.eval_limit, engine="hf", lengths=[512, 1024], depths=[0.0, 0.5, 1.0], samples=1)
        suites = args.suites.split(",")
        comparison = compare({name: evaluate_model(path, suites, settings, work / "eval" / name, progress=False)
                              for name, path in (("base", base), ("inserted", work / "inserted"), ("all", work / "all"))})
        print(f"\nsuites ({', '.join(suites)}; limit {args.eval_limit}), difference from base in brackets:\n")
        print("| metric | " + " | ".join(comparison["models"]) + " |")
        print("|---|" + "---|" * len(comparison["models"]))
        for metric, row in comparison["scores"].items():
            deltas = comparison["delta"][metric]
            cells = [f"{row[m]:.3f}" + (f" ({deltas[m]:+.3f})" if m != "base" and deltas.get(m) is not None else "") if row.get(m) is not None else "–"
                     for m in comparison["models"]]
            print(f"| {metric} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results, "seconds": seconds,
                                         "eval": comparison}, indent=2))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

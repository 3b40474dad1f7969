"""Benchmark: does a short LongPO run improve long-context retrieval and keep short-context skill?

    .venv/bin/python bench/longpo.py [--model zoo:smollm2-135m-instruct] [--comfortable 512] [--steps 30] [--lora]

1. Long-context probes (needle and multi-key retrieval, `llamak eval --suite long`) at 1×…4× the
   model's comfortable context `c`, and short-context perplexity on resources/eval/data/heldout_*.jsonl — before.
2. Self-synthesis (`llamak longpo synth`'s code): the model writes questions about chunks of
   c/4…c tokens of the bundled long documents and answers them from the chunk (chosen) and from a
   long context of up to 4c tokens (rejected). English documents are data/longpo/general_en.jsonl
   joined three by three (each ~7K SmolLM2 tokens); `--langs ko,en` adds data/ko/kobill.jsonl.
3. LongPO training on those pairs (the stage's code: `run_longpo`), full or `--lora`.
4. The same probes and perplexity — after. Prints a table, writes bench/out/longpo/result.json
   and the heat maps. Goal (issue 7): accuracy up at 2–4×c, perplexity change ≤ 2 %.

Runs on CPU (slow: use --comfortable 256 --steps 10) and on a GPU (bf16 generation and training).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_pro_ko import perplexity  # noqa: E402

from llamak.evaluate.long import run_long_suite  # noqa: E402
from llamak.generation import HFGenerator  # noqa: E402
from llamak.train.longpo import LongpoConfig, SynthOptions, run_longpo, synthesize_pairs  # noqa: E402
from llamak.zoo import resolve_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def long_documents(folder: Path, langs: list[str]) -> list[str]:
    """The bundled long documents as one JSONL (English domain articles joined three by three)."""
    english = [json.loads(line)["text"] for line in (ROOT / "data/longpo/general_en.jsonl").read_text().splitlines()]
    docs = ["\n\n".join(english[(i + k) % len(english)] for k in range(3)) for i in range(len(english))] if "en" in langs else []
    if "ko" in langs:
        docs += [json.loads(line)["text"] for line in (ROOT / "data/ko/kobill.jsonl").read_text().splitlines()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "documents.jsonl"
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    return [str(path)]


def probe(model_dir: Path, args, lengths: list[int], out: Path) -> dict:
    generator = HFGenerator(model_dir, batch_size=args.batch_size)
    result = run_long_suite(generator, lengths, [0.0, 0.25, 0.5, 0.75, 1.0], args.samples, args.langs, ("niah", "multikey"), out)
    del generator
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return result


def by_length(result: dict) -> dict[int, float]:
    cells: dict[int, list[float]] = {}
    for c in result["cells"]:
        cells.setdefault(c["length"], []).append(c["accuracy"])
    return {n: sum(v) / len(v) for n, v in sorted(cells.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--comfortable", type=int, default=2048, help="context (tokens) the model handles well; probes at 1-4x")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--learning-rate", type=float, default=1e-5)
    ap.add_argument("--lora", action="store_true", help="train LoRA adapters instead of all weights")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--samples", type=int, default=2, help="probes per (task, language, length, depth)")
    ap.add_argument("--langs", default="en")
    ap.add_argument("--batch-size", type=int, default=8, help="generation batch")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/longpo")
    args = ap.parse_args()
    args.langs = args.langs.split(",")
    c = args.comfortable
    lengths = [c, 2 * c, 3 * c, 4 * c]
    model = resolve_model(args.model, role="--model")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"model {args.model}, device {device}, probe lengths {lengths}")
    times = {}

    started = time.time()
    before = probe(model, args, lengths, args.out / "before")
    ppl_before = {lang: perplexity(model, lang, 4096) for lang in ("en", "ko")}
    times["probe_before_s"] = time.time() - started

    started = time.time()
    options = SynthOptions(documents=long_documents(args.out, args.langs), chunk_tokens=(c // 4, c), long_tokens=4 * c,
                           turns=args.turns, questions=4, question_source="auto", max_new_tokens=96, batch_size=args.batch_size)
    pairs = synthesize_pairs(options, model, args.out / "synth")
    synth = json.loads(pairs.with_name("synth.json").read_text())
    times["synth_s"] = time.time() - started

    started = time.time()
    config = LongpoConfig(pairs=str(pairs), max_steps=args.steps, learning_rate=args.learning_rate, batch_size=1,
                          trainable="lora" if args.lora else "all", logging_steps=max(1, min(5, args.steps // 4)), save_steps=10_000,
                          gradient_checkpointing=torch.cuda.is_available())
    metrics = run_longpo(config, model, args.out / "model")
    times["train_s"] = time.time() - started

    after = probe(args.out / "model", args, lengths, args.out / "after")
    ppl_after = {lang: perplexity(args.out / "model", lang, 4096) for lang in ("en", "ko")}

    b, a = by_length(before), by_length(after)
    print(f"\npairs {synth['pairs']} from {synth['documents']} documents (template questions {synth['template_questions']}, dropped {synth['dropped']})")
    print(f"LongPO {metrics['global_step']} steps, lr {args.learning_rate}, {'LoRA' if args.lora else 'full'}: loss {metrics['log_history'][0]['loss']:.3f} → {metrics['log_history'][-1]['loss']:.3f}")
    print(f"\n{'length':>8} {'×c':>4} {'before':>7} {'after':>7}")
    for n in lengths:
        print(f"{n:>8} {n // c:>4} {b[n]:>7.3f} {a[n]:>7.3f}")
    print(f"{'all':>8} {'':>4} {before['accuracy']:>7.3f} {after['accuracy']:>7.3f}")
    for lang in ("en", "ko"):
        change = 100 * (ppl_after[lang] / ppl_before[lang] - 1)
        print(f"short-context perplexity ({lang}): {ppl_before[lang]:.3f} → {ppl_after[lang]:.3f} ({change:+.2f} %)")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    result = {"model": args.model, "device": device, "lengths": lengths, "before": b, "after": a,
              "accuracy": [before["accuracy"], after["accuracy"]], "perplexity": [ppl_before, ppl_after],
              "synth": synth, "train": {k: metrics[k] for k in ("global_step", "train_loss", "log_history")}, "times": times, "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

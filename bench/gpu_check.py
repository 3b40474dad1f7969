"""GPU check: CPT training throughput and generation throughput on one GPU (run by bench/gpu_check.sh).

    python bench/gpu_check.py [--model zoo:smollm2-135m-instruct] [--steps 20] [--seq-len 2048]

1. CPT (the stage's own code: TRL SFTTrainer, packed padding-free rows, bf16 autocast) on the model
   expanded LLaMA-Pro style (+1 block per 5 layers), `trainable: inserted` and `all`: tokens/s over
   the timed steps (first step excluded) and peak GPU memory.
2. Generation with `llamak.generation.HFGenerator` (bf16, greedy, 128 new tokens) at batch 1, 8 and
   32: generated tokens/s (static batches, as probes and synthesis use it).
3. `llamak serve`'s engine (`serve.engine.HFEngine`, continuous batching) with 1, 8 and 32 requests
   in flight: generated tokens/s.
Prints one line per measurement with the GPU's name; also runs on CPU (slowly) so the script is tested.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import StepTimer  # noqa: E402

from llamak.generation import HFGenerator, Sampling  # noqa: E402
from llamak.surgery.expand import expand  # noqa: E402
from llamak.train.cpt import CptConfig, make_trainer  # noqa: E402
from llamak.zoo import resolve_model  # noqa: E402


def peak_memory_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def cpt_throughput(model: Path, mode: str, steps: int, seq_len: int, batch: int, work: Path) -> tuple[float, float]:
    config = CptConfig(trainable=mode, corpus={"ko": ["data/ko/*.jsonl"], "en": ["data/en/*.jsonl"]}, mix={"ko": 0.5, "en": 0.5},
                       max_steps=steps + 1, seq_len=seq_len, batch_size=batch, save_steps=10_000, logging_steps=10_000)
    trainer, *_ = make_trainer(config, model, work / f"ck-{mode}")
    timer = StepTimer()
    trainer.add_callback(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    tokens_per_step = seq_len * batch  # packed rows: every position is a real token
    times = timer.times[1:]
    del trainer
    return tokens_per_step * len(times) / sum(times), peak_memory_gib()


def generation_throughput(model: Path, batch: int, new_tokens: int) -> float:
    generator = HFGenerator(model, batch_size=batch)
    prompts = [[{"role": "user", "content": f"Write a long story about the number {i}."}] for i in range(batch)]
    generator.generate(prompts[:1], Sampling(max_new_tokens=8), progress=False)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    outputs = generator.generate(prompts, Sampling(max_new_tokens=new_tokens), progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(len(generator.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
    return tokens / seconds


def serving_throughput(model: Path, concurrency: int, new_tokens: int) -> float:
    """`llamak serve`'s engine (continuous batching): `concurrency` requests at once, tokens/s."""
    from concurrent.futures import ThreadPoolExecutor

    from llamak.serve.engine import HFEngine, Request

    engine = HFEngine(model, max_batch_size=concurrency)
    tok = engine.tokenizer
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": f"Write a long story about the number {i}."}],
                                           add_generation_prompt=True, tokenize=False), add_special_tokens=False)["input_ids"] for i in range(concurrency)]

    def one(ids):
        return [d for d in engine.stream_sync(Request(ids, new_tokens, 0.0))][-1].completion_tokens

    one(prompts[0][:8])  # warm-up
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, prompts))
    seconds = time.perf_counter() - started
    engine.close()
    return tokens / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:smollm2-135m-instruct")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--gen-batches", default="1,8,32")
    ap.add_argument("--serve-concurrency", default="1,8,32")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    base = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="llamak-gpu-check-"))
    expanded = work / "expanded"
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(base).num_hidden_layers
    expand(base, expanded, blocks=max(1, layers // 5), progress=False)
    for f in base.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy2(f, expanded / f.name)
    print(f"device: {device}; model {args.model} ({layers} layers, expanded +{max(1, layers // 5)})")
    for mode in ("inserted", "all"):
        tps, mem = cpt_throughput(expanded, mode, args.steps, args.seq_len, args.batch_size, work)
        print(f"CPT trainable={mode:<8} {args.batch_size}×{args.seq_len} tokens/step: {tps:,.0f} tokens/s, peak memory {mem:.2f} GiB")
    for batch in [int(b) for b in args.gen_batches.split(",")]:
        print(f"generation (HFGenerator, {'bf16' if torch.cuda.is_available() else 'fp32'}, greedy) batch {batch:>3}: {generation_throughput(base, batch, args.new_tokens):,.0f} new tokens/s")
    for concurrency in [int(c) for c in args.serve_concurrency.split(",")]:
        print(f"serving engine (llamak serve --engine hf, continuous batching) {concurrency:>3} requests at once: "
              f"{serving_throughput(base, concurrency, args.new_tokens):,.0f} new tokens/s")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

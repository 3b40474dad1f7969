"""Benchmark: `llamak merge` vs `mergekit-yaml` on the same configs (TIES and SLERP), same machine.

    .venv/bin/python bench/merge.py                  # ~1.1B-parameter Llama (TinyLlama shape), bf16, sharded
    .venv/bin/python bench/merge.py --layers 2       # quick smoke run

Builds a synthetic bf16 base model and two "fine-tunes" (base + small random updates) in 1 GB shards,
then runs each tool's command line in a fresh process, alternating the order each round (`--repeat`,
best time kept). Wall time is the whole command (imports included, as a user waits for it); peak
RSS is the command's own ru_maxrss, read by a tiny wrapper process so nothing is inherited from
this script. Prints llamak/mergekit ratios; goals from the issue: time ≤ 0.5, peak RSS ≤ 1.0.
Both tools write bf16 here (the inputs' dtype); llamak computes in float32 per tensor, mergekit in
the inputs' dtype.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from surgery import GB, synthetic_llama  # noqa: E402

from llamak.surgery.tensors import CheckpointReader, ShardedWriter  # noqa: E402

CONFIGS = {
    "ties": """merge_method: ties
base_model: {base}
models:
  - model: {ft1}
    parameters: {{weight: 0.6, density: 0.5}}
  - model: {ft2}
    parameters: {{weight: 0.4, density: 0.5}}
""",
    "slerp": """merge_method: slerp
base_model: {ft1}
models:
  - model: {ft1}
  - model: {ft2}
parameters:
  t: [{{filter: self_attn, value: [0, 0.5, 1]}}, {{value: 0.5}}]
""",
}

# Reports the peak RSS of the command it runs (RUSAGE_CHILDREN of a small process: nothing inherited).
MEASURE = "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"


def fine_tune(base: Path, out: Path, seed: int) -> None:
    """base + 0.002·N(0,1) per tensor (~10% of the weights' scale), written tensor by tensor."""
    out.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    with CheckpointReader(base) as reader:
        writer = ShardedWriter(out, [reader.spec(n) for n in reader.names()], max_shard_bytes=int(1 * GB))
        for name in reader.names():
            t = reader.read(name)
            writer.write(name, (t.float() + 0.002 * torch.randn(t.shape, generator=g)).to(t.dtype))
        writer.close()
    shutil.copy(base / "config.json", out / "config.json")


def run(command: list[str]) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - t
    code, rss_kb = proc.stdout.split()
    if int(code):
        raise RuntimeError(f"{command[0]} failed: {proc.stderr[-2000:]}")
    return seconds, int(rss_kb) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=22)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--methods", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="llamak-merge-bench-"))
    models = {name: root / name for name in ("base", "ft1", "ft2")}
    t = time.perf_counter()
    if not (models["ft2"] / "config.json").is_file():
        for p in models.values():
            shutil.rmtree(p, ignore_errors=True)
        total, largest = synthetic_llama(models["base"], args.layers, args.hidden, args.intermediate, args.vocab, 32, 4)
        fine_tune(models["base"], models["ft1"], 1)
        fine_tune(models["base"], models["ft2"], 2)
    with CheckpointReader(models["base"]) as r:
        total = sum(r.spec(n).nbytes for n in r.names())
        largest = max(r.spec(n).nbytes for n in r.names())
    print(f"synthetic Llama ×3: {total / GB:.2f} GB bf16 each ({total / 2e9:.2f} B params), largest tensor "
          f"{largest / GB:.3f} GB, ready in {time.perf_counter() - t:.0f} s")

    bin_dir = Path(sys.executable).parent
    results: dict[tuple[str, str], tuple[float, int]] = {}
    for method in args.methods:
        template = CONFIGS[method]
        config = root / f"{method}.yaml"
        config.write_text(template.format(**models))
        tools = {
            "llamak": lambda out: [str(bin_dir / "llamak"), "merge", str(config), "--out", str(out), "-q"],
            "mergekit": lambda out: [str(bin_dir / "mergekit-yaml"), str(config), str(out), "--no-copy-tokenizer", "--out-shard-size", "1B"],
        }
        for r in range(args.repeat):
            order = list(tools.items())
            for tool, command in order if r % 2 == 0 else reversed(order):
                out = root / f"out-{method}-{tool}"
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                seconds, rss = run(command(out))
                best = results.get((method, tool))
                results[(method, tool)] = (min(seconds, best[0]), max(rss, best[1])) if best else (seconds, rss)
                shutil.rmtree(out)

    print(f"\n{'method':<8}{'tool':<10}{'seconds':>9}{'peak RSS GB':>13}")
    for (method, tool), (seconds, rss) in results.items():
        print(f"{method:<8}{tool:<10}{seconds:>9.1f}{rss / GB:>13.2f}")
    print()
    for method in args.methods:
        ours, theirs = results[(method, "llamak")], results[(method, "mergekit")]
        print(f"{method}: llamak/mergekit wall time {ours[0] / theirs[0]:.2f} (goal ≤ 0.5), "
              f"peak RSS {ours[1] / theirs[1]:.2f} (goal ≤ 1.0)")
    if not args.workdir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()

"""Benchmark: streaming LLaMA-Pro expansion vs `cp -r` and vs LLaMA-Factory's whole-model approach.

    .venv/bin/python bench/surgery.py                 # ~1.2B-parameter Llama (Llama-3.2-1B shape), bf16
    .venv/bin/python bench/surgery.py --layers 4      # quick smoke run

Builds a synthetic Llama checkpoint with random bf16 weights in sharded safetensors, then times, each
in a fresh process (peak RSS = the child's ru_maxrss):
  - `cp -r` of the checkpoint (the IO floor),
  - `llamak expand` (streaming; unchanged tensors copied in the kernel, inserted o/down_proj as holes),
  - the LLaMA-Factory way (`scripts/llama_pro.py`): load the whole model with transformers, build the
    expanded state dict, save it with `save_pretrained`.
Prints ratios (copy throughput = bytes written per second relative to `cp`; RSS relative to the
largest tensor). Goals from the issue: ≥ 0.7 of copy throughput, peak RSS ≤ 3 × largest + 0.5 GB.
Absolute times on shared machines mean little; each variant runs `--repeat` times, best is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

from llamak.surgery.tensors import ShardedWriter, TensorSpec

GB = 1e9


def synthetic_llama(path: Path, layers: int, hidden: int, inter: int, vocab: int, heads: int, kv_heads: int) -> tuple[int, int]:
    """Write a random bf16 Llama checkpoint tensor by tensor; return (total bytes, largest tensor bytes)."""
    path.mkdir(parents=True)
    head_dim = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    shapes["model.norm.weight"] = (hidden,)
    specs = [TensorSpec(n, torch.bfloat16, s) for n, s in shapes.items()]
    writer = ShardedWriter(path, specs, max_shard_bytes=int(1 * GB))
    g = torch.Generator().manual_seed(0)
    for spec in specs:
        writer.write(spec.name, (torch.randn(spec.shape, generator=g) * 0.02).to(torch.bfloat16))
    writer.close()
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": layers,
        "hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "vocab_size": vocab, "tie_word_embeddings": True,
        "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "dtype": "bfloat16",
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0},
    }
    (path / "config.json").write_text(json.dumps(config))
    return sum(s.nbytes for s in specs), max(s.nbytes for s in specs)


# Each variant runs in a child so its peak RSS is its own. argv: src out blocks
LLAMAK = """
from llamak.surgery.expand import expand
START
expand(sys.argv[1], sys.argv[2], blocks=int(sys.argv[3]), max_shard_bytes=int(1e9), progress=False)
"""

# LLaMA-Factory's scripts/llama_pro.py, in substance: whole model in memory, cloned tensors, save.
LLAMA_FACTORY = """
import torch
from transformers import AutoConfig, AutoModelForCausalLM
src, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
START
config = AutoConfig.from_pretrained(src)
layers = config.num_hidden_layers
split = layers // n
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
state = model.state_dict()
new, k = {}, 0
for i in range(layers):
    for key, value in state.items():
        if f".{i}." in key:
            new[key.replace(f".{i}.", f".{k}.")] = value
    k += 1
    if (i + 1) % split == 0:
        for key, value in state.items():
            if f".{i}." in key:
                zero = "down_proj" in key or "o_proj" in key
                new[key.replace(f".{i}.", f".{k}.")] = torch.zeros_like(value) if zero else value.clone()
        k += 1
for key, value in state.items():
    if "layers" not in key:
        new[key] = value
config.num_hidden_layers = layers + n
model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
model.load_state_dict(new, strict=False)
model.save_pretrained(out, max_shard_size="1GB")
"""

# Peak RSS is VmHWM from /proc: unlike ru_maxrss it is not inherited from the forking parent.
WRAPPER = """
import re, sys, time
{body}
hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
print(time.perf_counter() - t, hwm)
"""


def run_child(body: str, *args) -> tuple[float, int]:
    """Run `body` in a fresh interpreter; the clock starts at its START line (after imports)."""
    code = WRAPPER.format(body=textwrap.dedent(body).replace("START", "t = time.perf_counter()"))
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    seconds, rss = proc.stdout.split()[-2:]
    return float(seconds), int(rss)


def run_cp(src: Path, out: Path) -> tuple[float, int]:
    t = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(out)], check=True)
    return time.perf_counter() - t, 0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.suffix == ".safetensors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-baseline", action="store_true", help="skip the LLaMA-Factory whole-model run")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="llamak-bench-"))
    src = root / "src"
    if src.exists():
        shutil.rmtree(src)
    t = time.perf_counter()
    total, largest = synthetic_llama(src, args.layers, args.hidden, args.intermediate, args.vocab, 32, 8)
    print(f"synthetic Llama: {total / GB:.2f} GB bf16 ({total / 2 / 1e9:.2f} B params), "
          f"largest tensor {largest / GB:.3f} GB, built in {time.perf_counter() - t:.0f} s")

    variants = {"cp -r": lambda out: run_cp(src, out), "llamak expand": lambda out: run_child(LLAMAK, src, out, args.blocks)}
    if not args.skip_baseline:
        variants["LLaMA-Factory (load+save)"] = lambda out: run_child(LLAMA_FACTORY, src, out, args.blocks)
    results = {}
    for r in range(args.repeat):
        order = list(variants.items())
        for name, fn in order if r % 2 == 0 else reversed(order):  # alternate: no order bias
            out = root / f"out-{r}-{name.split()[0]}"
            os.sync()  # start each run without the previous run's dirty pages to write back
            seconds, rss = fn(out)
            written = dir_bytes(out)
            best = results.get(name)
            if best is None or seconds < best[0]:
                results[name] = (seconds, rss, written)
            shutil.rmtree(out)

    cp_rate = results["cp -r"][2] / results["cp -r"][0]
    print(f"\n{'variant':<28}{'seconds':>9}{'written GB':>12}{'vs cp throughput':>18}{'peak RSS GB':>13}{'RSS / largest':>15}")
    for name, (seconds, rss, written) in results.items():
        rate = written / seconds / cp_rate
        rss_text = f"{rss / GB:>13.2f}{rss / largest:>15.2f}" if rss else f"{'-':>13}{'-':>15}"
        print(f"{name:<28}{seconds:>9.2f}{written / GB:>12.2f}{rate:>18.2f}{rss_text}")
    ours = results["llamak expand"]
    print(f"\ngoal: throughput ≥ 0.70 of cp → {ours[2] / ours[0] / cp_rate:.2f}; "
          f"peak RSS ≤ 3 × largest + 0.5 GB = {(3 * largest + 0.5 * GB) / GB:.2f} GB → {ours[1] / GB:.2f} GB")
    if "LLaMA-Factory (load+save)" in results:
        lf = results["LLaMA-Factory (load+save)"]
        print(f"llamak vs LLaMA-Factory: {lf[0] / ours[0]:.1f}× faster, {lf[1] / ours[1]:.1f}× less peak memory")
    if not args.workdir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()

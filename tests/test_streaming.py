"""Streaming: surgery memory must not grow with the model (peak RSS measured in a child process)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from llamak.surgery.tensors import ShardedWriter, TensorSpec

LAYERS, HIDDEN, INTER = 40, 512, 1024  # 400 tensors, ~420 MB in float32


def synthetic_llama(path, layers=LAYERS):
    """A Llama-shaped checkpoint with many tensors, written without ever holding it in memory."""
    path.mkdir()
    shapes = {"model.embed_tokens.weight": (1000, HIDDEN)}
    for i in range(layers):
        for name, shape in [
            ("self_attn.q_proj", (HIDDEN, HIDDEN)),
            ("self_attn.k_proj", (HIDDEN, HIDDEN)),
            ("self_attn.v_proj", (HIDDEN, HIDDEN)),
            ("self_attn.o_proj", (HIDDEN, HIDDEN)),
            ("mlp.gate_proj", (INTER, HIDDEN)),
            ("mlp.up_proj", (INTER, HIDDEN)),
            ("mlp.down_proj", (HIDDEN, INTER)),
            ("input_layernorm", (HIDDEN,)),
            ("post_attention_layernorm", (HIDDEN,)),
        ]:
            shapes[f"model.layers.{i}.{name}.weight"] = shape
    shapes["model.norm.weight"] = (HIDDEN,)
    shapes["lm_head.weight"] = (1000, HIDDEN)
    specs = [TensorSpec(n, torch.float32, s) for n, s in shapes.items()]
    writer = ShardedWriter(path, specs, max_shard_bytes=100 * 2**20)
    for k, spec in enumerate(specs):
        writer.write(spec.name, torch.full(spec.shape, 0.001 * (k + 1)))
    writer.close()
    config = {"model_type": "llama", "num_hidden_layers": layers, "hidden_size": HIDDEN, "intermediate_size": INTER,
              "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000}
    (path / "config.json").write_text(json.dumps(config))
    return path, sum(s.nbytes for s in specs)


# VmRSS/VmHWM from /proc belong to this process image; ru_maxrss would include the RSS that the
# forking parent (pytest) had, which could hide any growth. A first run on a small model pays the
# one-off costs (lazy imports, allocator arenas of the worker threads); then the peak is reset
# (`clear_refs` 5) and only the run on the large model is measured.
PROBE = textwrap.dedent(
    """
    import re, sys
    from llamak.surgery.expand import expand
    from llamak.surgery.chat_vector import chat_vector

    def kb(field):
        return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

    def run(src, out):
        if sys.argv[4] == "expand":
            expand(src, out, blocks=2, max_shard_bytes=64 * 2**20, progress=False)
        else:
            chat_vector(src, src, src, out, ratio=1.0, workers=2, max_shard_bytes=64 * 2**20, progress=False)

    small, large, out = sys.argv[1:4]
    run(small, out + "-warmup")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = kb("VmRSS")
    run(large, out)
    print((kb("VmHWM") - before) * 1024)
    """
)


@pytest.mark.parametrize("operation", ["expand", "chat_vector"])
def test_peak_memory_stays_far_below_model_size(tmp_path, operation):
    small, _ = synthetic_llama(tmp_path / "small", layers=2)
    src, model_bytes = synthetic_llama(tmp_path / "src")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(small), str(src), str(tmp_path / "out"), operation], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.strip().splitlines()[-1])
    largest = 2 * 2**20  # a 1024 × 512 float32 tensor
    # A whole-model load would grow by ≥ 400 MB; streaming holds a few tensors per worker
    # (chat vector: 2 workers × (3 inputs + 1 output + float32 temporaries)). Generous bound: 16 tensors + 16 MB.
    message = f"peak RSS grew {growth / 2**20:.0f} MB for a {model_bytes / 2**20:.0f} MB model"
    assert growth < 16 * largest + 16 * 2**20, message

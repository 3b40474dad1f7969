"""Streaming: surgery memory must not grow with the model (peak RSS measured in a child process)."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from llamak.surgery.tensors import ShardedWriter, TensorSpec

LAYERS, HIDDEN, INTER = 40, 512, 1024  # 400 tensors, ~420 MB in float32


def synthetic_llama(path):
    """A Llama-shaped checkpoint with many tensors, written without ever holding it in memory."""
    path.mkdir()
    shapes = {"model.embed_tokens.weight": (1000, HIDDEN)}
    for i in range(LAYERS):
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
    config = {"model_type": "llama", "num_hidden_layers": LAYERS, "hidden_size": HIDDEN, "intermediate_size": INTER,
              "num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 1000}
    (path / "config.json").write_text(json.dumps(config))
    return path, sum(s.nbytes for s in specs)


# VmRSS/VmHWM from /proc belong to this process image; ru_maxrss would include the RSS that the
# forking parent (pytest) had, which could hide any growth.
PROBE = textwrap.dedent(
    """
    import re, sys
    from llamak.surgery.expand import expand
    from llamak.surgery.chat_vector import chat_vector

    def kb(field):
        return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

    src, out = sys.argv[1], sys.argv[2]
    before = kb("VmRSS")
    if sys.argv[3] == "expand":
        expand(src, out, blocks=8, max_shard_bytes=64 * 2**20, progress=False)
    else:
        chat_vector(src, src, src, out, ratio=1.0, workers=2, max_shard_bytes=64 * 2**20, progress=False)
    print((kb("VmHWM") - before) * 1024)
    """
)


@pytest.mark.parametrize("operation", ["expand", "chat_vector"])
def test_peak_memory_stays_far_below_model_size(tmp_path, operation):
    src, model_bytes = synthetic_llama(tmp_path / "src")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(src), str(tmp_path / "out"), operation], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    growth = int(proc.stdout.strip().splitlines()[-1])
    largest = 2 * 2**20  # a 1024 × 512 float32 tensor
    # Generous bound: a whole-model load would grow by ≥ 420 MB; streaming needs a few tensors.
    assert growth < model_bytes / 8, f"peak RSS grew {growth / 2**20:.0f} MB for a {model_bytes / 2**20:.0f} MB model"
    assert growth < 20 * largest + 32 * 2**20

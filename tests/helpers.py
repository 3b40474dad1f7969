"""Shared test helpers (not fixtures): load models and compare logits."""

import torch
from safetensors.torch import load_file


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def logits(model, ids):
    return model(ids).logits


def state(path):
    """Every tensor of a checkpoint directory (all shards), as one dict."""
    out = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def expand_with_tokenizer(src, out, blocks=2):
    """LLaMA-Pro-expand a fixture model and give the output its tokenizer files (for training)."""
    from shutil import copy2

    from llamak.surgery.expand import expand

    expand(src, out, blocks=blocks, progress=False)
    for f in src.glob("tokenizer*"):
        copy2(f, out / f.name)
    return out


def random_ids(vocab=256, batch=2, length=19, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (for live servers in tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

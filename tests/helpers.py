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


def random_ids(vocab=256, batch=2, length=19, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))

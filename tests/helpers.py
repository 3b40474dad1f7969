"""Shared test helpers (not fixtures): load models and compare logits."""

import torch


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.no_grad()
def logits(model, ids):
    return model(ids).logits


def random_ids(vocab=256, batch=2, length=19, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))

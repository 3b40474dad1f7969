"""Instruction tuning (SFT) on chat data, on TRL's `SFTTrainer`, with loss on assistant turns only.

    llamak train sft sft.yaml            # fields below + `model:` and `out:`

Data: JSONL files whose rows hold `messages` (`[{"role": …, "content": …}, …]`). The model's chat
template renders them; for the loss mask the template needs `{% generation %}` markers, so for
Llama-3 and ChatML tokenizers llamak swaps in its marked variant while training (TRL's
`assistant_only_loss=True`) and saves that same template, markers removed, with the model: the
output is prompted exactly as it was trained (for a hub Llama-3.1 model this drops the hub
template's injected "Cutting Knowledge Date" system block). `trainable: lora` merges the adapters
into the saved weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from llamak.chat_template import (
    ASSISTANT_MASK_TEMPLATE,
    CHATML_ASSISTANT_MASK_TEMPLATE,
    has_generation_markers,
    strip_generation_markers,
)
from llamak.errors import LlamakError
from llamak.checkpoint import ModelDir
from llamak.train.common import Trainable, TrainSettings, build_config, build_model, expand_globs, load_tokenizer, read_jsonl, run_training

log = logging.getLogger("llamak")


class SftConfig(TrainSettings):
    """An SFT stage. `dataset`: JSONL globs with a `messages` column."""

    trainable: Trainable = "all"
    dataset: list[str] = Field(min_length=1)
    packing: bool = True
    learning_rate: float = Field(2e-5, gt=0)

    def data_files(self) -> list[Path]:
        return expand_globs(self.dataset, "dataset")


def assistant_mask_template(tokenizer) -> str:
    """A chat template with `{% generation %}` markers for this tokenizer's chat format."""
    current = tokenizer.chat_template or ""
    if has_generation_markers(current):
        return current
    if tokenizer.convert_tokens_to_ids("<|start_header_id|>") == 128006:  # the Llama-3 family
        return ASSISTANT_MASK_TEMPLATE
    if "<|im_start|>" in current:
        return CHATML_ASSISTANT_MASK_TEMPLATE
    raise LlamakError(
        "sft: the model's chat template has no {% generation %} markers and is neither Llama-3 nor ChatML; "
        "add a marked template to its tokenizer_config.json for assistant-only loss"
    )


def read_chats(files: list[Path]) -> list[list[dict]]:
    chats = []
    for path in files:
        for number, row in enumerate(read_jsonl(path, "messages"), 1):
            messages = row["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages):
                raise LlamakError(f"{path}: row {number}: messages must be a list of {{role, content}} objects")
            if not any(m["role"] == "assistant" for m in messages):
                raise LlamakError(f"{path}: row {number}: no assistant message to learn from")
            chats.append([{"role": m["role"], "content": m["content"]} for m in messages])
    return chats


def make_trainer(config: SftConfig, model_dir: Path, checkpoints: Path):
    """The `SFTTrainer` for an SFT stage (tests use it to inspect real batches)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    source, tokenizer = ModelDir.open(model_dir), load_tokenizer(model_dir)
    marked = tokenizer.chat_template = assistant_mask_template(tokenizer)
    chats = read_chats(config.data_files())
    log.info("sft: %d conversations", len(chats))
    args = build_config(
        SFTConfig,
        config,
        checkpoints,
        source,
        max_length=config.seq_len,
        packing=config.packing,
        assistant_only_loss=True,
    )
    model, params = build_model(source, args, config.trainable, config)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"messages": chats}), processing_class=tokenizer)
    # The dataset is tokenized: save the template the model was trained on, without the markers.
    tokenizer.chat_template = strip_generation_markers(marked)
    return trainer, tokenizer, source, {**params, "conversations": len(chats)}


def run_sft(config: SftConfig, model_dir: Path, out: Path) -> dict:
    """Run an SFT stage from `model_dir` into `out`; resumes from `OUT.checkpoints/` when it can."""
    return run_training("sft", make_trainer, config, model_dir, out)

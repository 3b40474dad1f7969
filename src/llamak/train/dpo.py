"""Direct Preference Optimization on TRL's `DPOTrainer`.

    llamak train dpo dpo.yaml            # fields below + `model:` and `out:`

Data: JSONL rows with `prompt`, `chosen`, `rejected` — all strings, or all chat messages (`prompt`
a list of user/system turns, `chosen`/`rejected` a list with the assistant turn); TRL applies the
chat template. Loss types are TRL's (`sigmoid`, `ipo`, `hinge`, … and `sft` for the NLL term):
`loss_type: [sigmoid, sft]` with `loss_weights: [1.0, 0.5]` is DPO+NLL (RPO).

The reference model is always explicit:
- `trainable: all|inserted` — a second copy of the stage's input (or of `reference:`) is loaded and
  frozen; TRL is never left to reload "the model's path" (after a resume that would be the wrong
  model, and an in-memory model has none);
- `trainable: lora` — the policy with its adapters switched off (no second copy);
- `precompute_ref_log_probs: true` — reference log-probs are computed once before training and
  stored with the dataset; no reference model stays in memory.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from llamak.errors import LlamakError
from llamak.checkpoint import ModelDir
from llamak.train.common import Trainable, TrainSettings, build_config, build_model, expand_globs, load_model, trainable_parts, load_tokenizer, read_jsonl, run_training

log = logging.getLogger("llamak")

LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
              "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


class DpoConfig(TrainSettings):
    """A DPO stage. `dataset`: JSONL globs with prompt/chosen/rejected."""

    trainable: Trainable = "all"
    dataset: list[str] = Field(min_length=1)
    beta: float = Field(0.1, gt=0)
    loss_type: list[str] = ["sigmoid"]
    loss_weights: list[float] | None = None
    precompute_ref_log_probs: bool = False
    reference: str | None = None  # the reference model (default: the stage's input model)
    learning_rate: float = Field(1e-6, gt=0)

    @field_validator("loss_type", mode="before")
    @classmethod
    def _loss_list(cls, value):
        values = [value] if isinstance(value, str) else value
        unknown = [v for v in values or [] if v not in LOSS_TYPES]
        if unknown:
            raise ValueError(f"unknown loss type {unknown[0]!r} (TRL's: {', '.join(LOSS_TYPES)})")
        return values

    @model_validator(mode="after")
    def _weights_match(self):
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(f"loss_weights has {len(self.loss_weights)} values for {len(self.loss_type)} loss types")
        if self.reference and "lora" in trainable_parts(self.trainable):
            raise ValueError("reference: with trainable: lora the reference is the model without its adapters")
        return self

    def data_files(self) -> list[Path]:
        return expand_globs(self.dataset, "dataset")


def is_chat(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value)


def read_preferences(files: list[Path]) -> list[dict]:
    """Preference rows, all plain text or all conversational; errors name file and row."""
    rows, kinds = [], set()
    for path in files:
        for number, row in enumerate(read_jsonl(path, "prompt"), 1):
            missing = [k for k in ("chosen", "rejected") if k not in row]
            if missing:
                raise LlamakError(f"{path}: row {number}: no {missing[0]!r} field (expected prompt, chosen, rejected)")
            fields = [row[k] for k in ("prompt", "chosen", "rejected")]
            if all(isinstance(f, str) for f in fields):
                kinds.add("text")
            elif all(is_chat(f) for f in fields):
                kinds.add("chat")
                if any(m["role"] != "assistant" for m in row["chosen"] + row["rejected"]):
                    raise LlamakError(f"{path}: row {number}: chosen and rejected must hold assistant messages only")
            else:
                raise LlamakError(f"{path}: row {number}: prompt, chosen and rejected must all be strings or all be lists of {{role, content}} messages")
            rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    if len(kinds) > 1:
        raise LlamakError("dataset: mixes plain-text and conversational preference rows; use one format")
    return rows


def make_trainer(config: DpoConfig, model_dir: Path, checkpoints: Path, reference: Path | None = None):
    """The `DPOTrainer` for a DPO stage, with its reference model decided as the module says."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    source, tokenizer = ModelDir.open(model_dir), load_tokenizer(model_dir)
    rows = read_preferences(config.data_files())
    log.info("dpo: %d preference pairs", len(rows))
    args = build_config(
        DPOConfig,
        config,
        checkpoints,
        source,
        max_length=config.seq_len,
        beta=config.beta,
        loss_type=config.loss_type,
        loss_weights=config.loss_weights,
        precompute_ref_log_probs=config.precompute_ref_log_probs,
    )
    model, params = build_model(source, args, config.trainable, config)
    ref_model = None
    if "lora" not in trainable_parts(config.trainable) and (reference or not config.precompute_ref_log_probs):
        ref_model = load_model(ModelDir.open(reference or model_dir, role="reference"), args)
        ref_model.requires_grad_(False).eval()
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    return trainer, tokenizer, source, {**params, "pairs": len(rows)}


def run_dpo(config: DpoConfig, model_dir: Path, out: Path, reference: Path | None = None) -> dict:
    """Run a DPO stage from `model_dir` into `out`; resumes from `OUT.checkpoints/` when it can."""
    make = lambda c, m, ckpt: make_trainer(c, m, ckpt, reference)  # noqa: E731
    return run_training("dpo", make, config, model_dir, out)

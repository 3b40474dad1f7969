"""What every training stage shares: settings, the one model builder, freezing from the layer map,
LoRA, resumable checkpoints, and saving the result as a plain model directory with lineage.

The trainers themselves are TRL's (`SFTTrainer` for CPT and SFT); this module only turns a stage's
settings into a TRL config (first: it carries the sharding, see `sharding.py`) and then builds the
model (`build_model`, after the config, so that ZeRO-3/FSDP2 shard it while it loads). The layer map in the input's `llamak.json` says
which blocks are inserted — nobody recomputes that from a stride here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from llamak.checkpoint import VOCAB_MAP_FILE, ModelDir
from llamak.errors import LlamakError
from llamak.files import expand_globs, read_jsonl  # noqa: F401 (the training stages import them from here)
from llamak.lineage import LayerMap, atomic_output, content_hash, file_fingerprint, inserted_layers, make_lineage, write_lineage
from llamak.shape import trainable_parts
from llamak.train.sharding import DEEPSPEED, SHARDED, current_sharding, load_dtype, trainer_fields, upcast_trainable

log = logging.getLogger("llamak")

CHECKPOINT_SUFFIX = ".checkpoints"  # Trainer checkpoints live beside the output until it is complete
STATE_FILE = "llamak_stage.json"


# Fields llamak sets from the stage itself; overriding them through `trainer:` would break
# resume (output_dir), packing without truncation, or the assistant-only loss.
RESERVED_TRAINER_FIELDS = {"output_dir", "max_steps", "max_length", "packing", "packing_strategy", "assistant_only_loss", "dataset_text_field"}


def _normalise_trainable(value: str | list[str]) -> str | list[str]:
    parts = trainable_parts(value)
    return next(iter(parts)) if len(parts) == 1 else sorted(parts)


# A stage's `trainable:` — one part or a list of them (e.g. EEVE's `[new_embeddings, inserted]`).
Trainable = Annotated[str | list[str], AfterValidator(_normalise_trainable)]


class LoraSettings(BaseModel):
    """LoRA adapters (peft); merged into the saved weights at the end of the stage."""

    model_config = ConfigDict(extra="forbid")
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    only_inserted: bool = False  # restrict adapters to the inserted (LLaMA-Pro) blocks of the layer map


class TrainSettings(BaseModel):
    """Settings shared by the training stages. Anything else TRL accepts goes under `trainer:`."""

    model_config = ConfigDict(extra="forbid")
    max_steps: int = Field(50, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, gt=0, description="per device")
    grad_accum: int = Field(1, gt=0)
    seq_len: int = Field(512, gt=8)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    save_steps: int = Field(25, gt=0, description="Trainer checkpoint interval: a killed stage resumes from the last one")
    logging_steps: int = Field(5, gt=0)
    seed: int = 42
    gradient_checkpointing: bool = False
    lora: LoraSettings = LoraSettings()
    trainer: dict = Field(default_factory=dict, description="extra TRL/transformers config fields, passed through")

    @field_validator("trainer")
    @classmethod
    def _not_reserved(cls, trainer: dict) -> dict:
        reserved = sorted(RESERVED_TRAINER_FIELDS & set(trainer))
        if reserved:
            raise ValueError(f"{reserved[0]} is set by llamak from the stage's own fields and cannot be overridden")
        return trainer


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelDir, args, config=None):
    """THE loader of every model a training stage builds (policy or frozen reference).

    Call it after the Trainer config `args` exists: that config carries the sharding, so ZeRO-3's
    `zero.Init` partitions the weights while they load and FSDP2 reads them on rank 0 only; the
    dtype follows `sharding.load_dtype` (the checkpoint's own under a sharding engine, never a whole
    float32 copy per rank). `config`: a changed model config (e.g. LongPO's RoPE).
    """
    from transformers import AutoModelForCausalLM

    dtype = load_dtype(current_sharding(), source_dtype(source), bool(args.bf16))
    if current_sharding() in DEEPSPEED:
        return load_zero3(source, dtype, config)
    kwargs = {"config": config} if config is not None else {}
    return AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, **kwargs)


def load_zero3(source: ModelDir, dtype, config=None):
    """A ZeRO-3 model built partitioned (`zero.Init`), then filled one tensor at a time: rank 0
    reads each tensor from the safetensors shards and DeepSpeed scatters it. transformers' own ZeRO-3
    loading first reads every shard into rank 0's memory (the whole model: 140 GB at 70B)."""
    import deepspeed
    import torch.distributed as dist
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from llamak.surgery.tensors import CheckpointReader

    config = config or AutoConfig.from_pretrained(source.path)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # partitioned: transformers sees ZeRO-3
    reader = CheckpointReader(source.path) if dist.get_rank() == 0 else None
    try:
        for name, param in model.named_parameters():  # tied weights appear once
            if reader is not None and name not in reader:
                raise LlamakError(f"{source.path}: no tensor {name!r} in its safetensors files")
            with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
                if reader is not None:
                    param.data.copy_(reader.read(name).to(param.dtype))
    finally:
        if reader is not None:
            reader.close()
    model.config._name_or_path = str(source.path)  # where TRL reloads a reference from
    if (source.path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(source.path)
    return model.eval()


def build_model(source: ModelDir, args, mode: str | list[str], settings: TrainSettings, config=None):
    """The trainable model of a stage: loaded by `load_model`, its trainable part chosen by `mode`,
    trainable parameters upcast to float32 when replicated from a bf16 checkpoint. Returns
    (model, {trainable, total, share, load dtype, sharding})."""
    model = load_model(source, args, config)
    loaded = str(next(model.parameters()).dtype).removeprefix("torch.")
    model, params = prepare_trainable(model, mode, settings, source.layer_map, source.new_token_ids)
    if current_sharding() not in SHARDED:
        upcast_trainable(model)
    return model, {**params, "load_dtype": loaded, "sharding": current_sharding()}


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) — the full counts also under ZeRO-3, whose partitioned parameters are
    empty tensors carrying their real size in `ds_numel`."""
    numel = lambda p: getattr(p, "ds_numel", None) or p.numel()  # noqa: E731
    trainable = sum(numel(p) for p in model.parameters() if p.requires_grad)
    return trainable, sum(numel(p) for p in model.parameters())


def unfreeze_inserted(model, layer_map: LayerMap) -> list[int]:
    """Train the inserted blocks named by the layer map (the caller froze the rest)."""
    inserted = inserted_layers(layer_map)
    if not inserted:
        raise LlamakError(
            "trainable: inserted, but the model has no inserted blocks in its layer map "
            "(run an expand stage first, or use trainable: all)"
        )
    for k in inserted:
        model.model.layers[k].requires_grad_(True)
    return inserted


def zero_old_rows(grad, first_new_id: int):
    """The gradient of an embedding matrix with the rows of the original vocabulary zeroed."""
    grad = grad.clone()
    grad[:first_new_id] = 0
    return grad


def unfreeze_new_embeddings(model, new_ids: range, modules=None) -> int:
    """Train only the rows of the added tokens in embed_tokens and lm_head (one matrix when tied).

    The old rows get a zero gradient, so Adam moves them by exactly 0 (its update is m/(√v+ε) with
    m = v = 0) and they stay bit-identical; weight decay would still shrink them, so it is refused."""
    first = new_ids.start
    modules = modules or (model.get_input_embeddings(), model.get_output_embeddings())
    matrices = {id(m.weight): m.weight for m in modules if m is not None}
    for weight in matrices.values():
        weight.requires_grad_(True)
        weight.register_hook(lambda grad, first=first: zero_old_rows(grad, first))
    return sum(first * w.shape[1] for w in matrices.values())  # parameters with a gradient that is always 0


def add_lora(model, lora: LoraSettings, layer_map: LayerMap, new_ids: range | None = None):
    """The model with LoRA adapters, and the number of parameters whose gradient is masked to 0."""
    from peft import LoraConfig, get_peft_model

    layers = None
    if lora.only_inserted:
        layers = inserted_layers(layer_map)
        if not layers:
            raise LlamakError("lora.only_inserted is set, but the model has no inserted blocks in its layer map")
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        layers_to_transform=layers,
        # new_embeddings with LoRA: peft trains just these rows of embed_tokens (merged at the end);
        # peft cannot do that on a Linear lm_head, so an untied head gets the row mask instead
        trainable_token_indices={"embed_tokens": list(new_ids)} if new_ids else None,
        task_type="CAUSAL_LM",
    )
    head = model.get_output_embeddings()
    untied_head = new_ids and head is not None and head.weight is not model.get_input_embeddings().weight
    model = get_peft_model(model, config)
    return model, unfreeze_new_embeddings(model, new_ids, [head]) if untied_head else 0


def prepare_trainable(model, mode: str | list[str], settings: TrainSettings, layer_map: LayerMap, new_ids: range | None = None):
    """Apply the stage's trainable parts; log and return (model, {trainable, total, share})."""
    parts = trainable_parts(mode)
    masked = 0
    if "new_embeddings" in parts:
        if not new_ids:
            raise LlamakError("trainable: new_embeddings, but the model has no added tokens (no vocab_map.json: run a vocab stage first)")
        if settings.weight_decay:
            raise LlamakError("trainable: new_embeddings needs weight_decay: 0 (decay would move the frozen rows of the old vocabulary)")
        if current_sharding() in SHARDED:
            raise LlamakError(f"trainable: new_embeddings under {current_sharding()} is not supported yet (its row mask needs whole "
                              "embedding gradients); use ddp or none")
    if "lora" in parts:
        model, masked = add_lora(model, settings.lora, layer_map, new_ids if "new_embeddings" in parts else None)
    elif "all" not in parts:
        model.requires_grad_(False)
        if "inserted" in parts:
            unfreeze_inserted(model, layer_map)
        if "new_embeddings" in parts:
            masked = unfreeze_new_embeddings(model, new_ids)
    trainable, total = count_parameters(model)
    trainable -= masked
    log.info("trainable parameters: %s of %s (%.2f%%, mode %s)", f"{trainable:,}", f"{total:,}", 100 * trainable / total, mode)
    return model, {"trainable_parameters": trainable, "total_parameters": total, "trainable_share": trainable / total}


def trl_config_kwargs(settings: TrainSettings, checkpoints: Path) -> dict:
    """The TRL/transformers config fields every stage sets (pass-through `trainer:` fields win)."""
    kwargs = dict(
        output_dir=str(checkpoints),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=int(settings.warmup_ratio * settings.max_steps),
        weight_decay=settings.weight_decay,
        logging_steps=settings.logging_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=2,
        seed=settings.seed,
        data_seed=settings.seed,
        gradient_checkpointing=settings.gradient_checkpointing,
        report_to=[],
        include_num_input_tokens_seen=True,
        dataloader_num_workers=0,
    )
    return kwargs


def fingerprint(config: BaseModel, model_dir: Path) -> str:
    """Identifies a run for checkpoint resume: the same stage config, data files and input model."""
    h = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    h.update(content_hash(model_dir).encode())
    for path in getattr(config, "data_files", lambda: [])():
        h.update(f"{path}:{file_fingerprint(path)}".encode())
    return h.hexdigest()


def checkpoint_dir(out: Path, fingerprint: str) -> tuple[Path, bool]:
    """Where the Trainer checkpoints (`OUT.checkpoints/`), and whether to resume from them.

    Checkpoints of a different configuration (fingerprint) are discarded: resuming them would mix
    two runs.
    """
    path = Path(str(out) + CHECKPOINT_SUFFIX)
    state = path / STATE_FILE
    if int(os.environ.get("RANK", "0")) == 0:  # under `accelerate launch`, one process tidies up
        if path.exists() and (not state.is_file() or json.loads(state.read_text()).get("fingerprint") != fingerprint):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"fingerprint": fingerprint}))
    wait_for_everyone()  # the others decide only after the tidy-up
    return path, last_complete_checkpoint(path) is not None


def process_state():
    """accelerate's state under `accelerate launch` (WORLD_SIZE > 1), else None. cpu=True without a
    GPU: otherwise every rank gets a 1-process state (all "main", barriers that do not wait)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    import torch

    return PartialState(cpu=not torch.cuda.is_available())


def wait_for_everyone() -> None:
    """A barrier across `accelerate launch` processes; nothing in a single process."""
    state = process_state()
    if state is not None:
        state.wait_for_everyone()


def source_dtype(source: ModelDir):
    """The dtype the input checkpoint was stored in (float32 when the config does not say)."""
    import torch

    name = source.config.get("dtype") or source.config.get("torch_dtype") or "float32"
    return getattr(torch, str(name).replace("torch.", ""), torch.float32)


def save_zero3_weights(model, out_dir: Path | None, dtype) -> None:
    """ZeRO-3 weights as a plain safetensors checkpoint, gathered one parameter at a time on every
    rank (call it on all of them, `out_dir` on the main one only): the writer never holds more than
    one tensor of the model. DeepSpeed's own 16-bit save and `accelerator.get_state_dict` gather
    every weight onto one process first — 140 GB of host memory at 70B."""
    import deepspeed

    from llamak.surgery.tensors import ShardedWriter, TensorSpec

    params = list(model.named_parameters())  # tied weights appear once, as in save_pretrained
    writer = ShardedWriter(out_dir, [TensorSpec(n, dtype, tuple(getattr(p, "ds_shape", p.shape))) for n, p in params]) if out_dir else None
    for name, param in params:
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if writer is not None:
                writer.write(name, param.detach().to("cpu", dtype))
    if writer is not None:
        writer.close()


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest `checkpoint-N` that was fully written (the Trainer writes trainer_state.json last;
    a process killed while saving leaves a checkpoint without it, which must not be resumed)."""
    complete = [p for p in Path(checkpoints).glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[1]))) if complete else None


def build_config(config_class, settings: TrainSettings, checkpoints: Path, source: ModelDir, **stage_fields):
    """Instantiate a TRL config — before any model is built, since it carries the sharding (see
    `load_model`); a field TRL does not know or a value it rejects is a one-line error."""
    kwargs = trl_config_kwargs(settings, checkpoints) | trainer_fields(current_sharding(), source_dtype(source), source.config) | stage_fields
    kwargs.update(settings.trainer)
    try:
        args = config_class(**kwargs)
    except (TypeError, ValueError) as e:
        raise LlamakError(f"{config_class.__name__}: {' '.join(str(e).split())}") from None
    args.world_size  # sets up the process group (and DeepSpeed's zero.Init config) now, before loading
    return args


def run_training(stage: str, make_trainer, config: TrainSettings, model_dir: Path, out: Path) -> dict:
    """A training stage end to end: checkpoints dir (resume if it matches), trainer, train, save.

    `make_trainer(config, model_dir, checkpoints)` returns (trainer, tokenizer, ModelDir, metrics).
    """
    out = Path(out)
    checkpoints, resume = checkpoint_dir(out, fingerprint(config, model_dir))
    trainer, tokenizer, source, metrics = make_trainer(config, model_dir, checkpoints)
    args = config.model_dump(mode="json")
    return train_and_save(trainer, source, tokenizer, out, checkpoints, resume, stage, args, metrics, {"model": Path(model_dir)})


def train_and_save(trainer, source: ModelDir, tokenizer, out: Path, checkpoints: Path, resume: bool, stage: str, args: dict, metrics: dict, inputs: dict[str, Path]) -> dict:
    """Train (resuming from the last checkpoint when there is one), then save on the main process."""
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    if sharded and hasattr(trainer.model, "merge_and_unload"):  # fail before training, not after
        raise LlamakError(f"{stage}: LoRA under DeepSpeed/FSDP is not supported yet (its adapters cannot be merged into "
                          "sharded weights at save time); use trainable: all or inserted, or DDP for LoRA")
    started = time.time()
    last = last_complete_checkpoint(checkpoints) if resume else None
    result = trainer.train(resume_from_checkpoint=last)
    state = trainer.state
    metrics = {
        **metrics,
        "train_loss": result.training_loss,
        "global_step": state.global_step,
        "resumed_from_step": int(last.rsplit("-", 1)[1]) if last else None,
        "num_input_tokens_seen": int(getattr(state, "num_input_tokens_seen", 0) or 0),
        "train_seconds": round(time.time() - started, 2),
        "log_history": [h for h in state.log_history if "loss" in h],
    }
    # sharded weights: every rank takes part in gathering them; the main process writes them —
    # ZeRO-3 one parameter at a time (streamed into the shards), FSDP as one state dict
    zero3 = accelerator.distributed_type == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3
    full_state = accelerator.get_state_dict(trainer.model_wrapped) if sharded and not zero3 else None
    model = accelerator.unwrap_model(trainer.model)
    dtype = source_dtype(source)
    if zero3 and not accelerator.is_main_process:
        save_zero3_weights(model, None, dtype)
    if accelerator.is_main_process:
        if hasattr(model, "merge_and_unload"):  # LoRA: the saved model is plain weights
            model = model.merge_and_unload()
        model.config.use_cache = True
        if full_state is None and not zero3:
            model.to(dtype)
        elif full_state is not None:
            full_state = {k: v.to(dtype) for k, v in full_state.items()}
        with atomic_output(out, overwrite=True) as tmp:
            if zero3:
                save_zero3_weights(model, tmp, dtype)
                model.config.dtype = dtype
                model.config.save_pretrained(tmp)
                if model.can_generate() and model.generation_config is not None:
                    model.generation_config.save_pretrained(tmp)
            else:
                model.save_pretrained(tmp, state_dict=full_state)
            tokenizer.save_pretrained(tmp)
            if (source.path / VOCAB_MAP_FILE).is_file():
                shutil.copy2(source.path / VOCAB_MAP_FILE, tmp / VOCAB_MAP_FILE)
            layer_map = source.layer_map if source.is_expanded else None
            write_lineage(tmp, make_lineage(stage, args, inputs, layer_map, metrics=metrics))
        shutil.rmtree(checkpoints, ignore_errors=True)
    accelerator.wait_for_everyone()
    return metrics

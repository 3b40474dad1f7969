"""How a training process shards its model: the part of launching that runs inside each rank.

`llamak run`/`llamak train` with `--sharding S` start every rank with `LLAMAK_SHARDING=S` in its
environment (see `llamak/launch.py`). Here that name becomes what the Trainer needs *before* the
model is built — so that ZeRO-3's `zero.Init` partitions the weights as they load and FSDP2 reads
them on rank 0 only — and the dtype the weights load in:

| sharding       | engine                      | weights load in        | float32 master copy              |
|----------------|-----------------------------|------------------------|----------------------------------|
| none, ddp      | one replica per rank        | float32 on CPU; the checkpoint's dtype on a bf16 GPU, trainable parameters upcast | of the trainable parameters, whole |
| zero3          | DeepSpeed ZeRO-3            | the checkpoint's dtype, partitioned at load | DeepSpeed's, sharded     |
| zero3_offload  | ZeRO-3, params + optimizer in CPU RAM | as zero3     | DeepSpeed's, sharded, in CPU RAM |
| fsdp2          | PyTorch FSDP2 (GPUs only)   | the checkpoint's dtype on rank 0, broadcast | FSDP2's, sharded          |

The DeepSpeed and FSDP settings come from the shipped accelerate configs (`recipes/accelerate/`,
`llamak/resources/accelerate/`), so a team tunes one file for both `accelerate launch` by hand and
llamak's own launcher.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

import yaml

from llamak.errors import LlamakError
from llamak.shape import Shape

Sharding = Literal["none", "ddp", "zero3", "zero3_offload", "fsdp2"]
SHARDINGS: tuple[str, ...] = get_args(Sharding)
SHARDED = ("zero3", "zero3_offload", "fsdp2")
DEEPSPEED = ("zero3", "zero3_offload")
ENV = "LLAMAK_SHARDING"
FSDP2_NEEDS_GPUS = "sharding fsdp2 needs GPUs (accelerate's FSDP runs on CUDA only); on CPUs use zero3 (DeepSpeed) or ddp"

# sharding → the accelerate config file that describes it
ACCELERATE_CONFIGS = {"ddp": "ddp_cpu.yaml", "zero3": "zero3.yaml", "zero3_offload": "zero3_offload.yaml", "fsdp2": "fsdp2.yaml"}


def accelerate_configs_dir() -> Path:
    """The shipped accelerate configs (the same files as the repository's recipes/accelerate/)."""
    return Path(str(resources.files("llamak") / "resources" / "accelerate"))


def current_sharding() -> str:
    """This process's sharding: what the launcher put in LLAMAK_SHARDING (`none` outside a launch)."""
    value = os.environ.get(ENV, "none")
    if value not in SHARDINGS:
        raise LlamakError(f"{ENV}={value!r}: expected one of {', '.join(SHARDINGS)}")
    return value


def read_accelerate_config(sharding: str) -> dict:
    path = accelerate_configs_dir() / ACCELERATE_CONFIGS[sharding]
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# DeepSpeed's default for how many gathered parameters may stay live (and be reused without a new
# gather): 1e9 — about one 70B decoder layer, but a whole model below 1B parameters.
DEEPSPEED_LIVE_PARAMETERS = 1_000_000_000


def deepspeed_config(sharding: str, layer_parameters: int | None = None) -> dict:
    """The DeepSpeed JSON config of a ZeRO-3 sharding, from its accelerate config's `deepspeed_config`.

    Batch size, accumulation, clipping and bf16 stay "auto": DeepSpeed takes them from the stage's
    own settings through the Trainer, so the stage config stays the one source of truth. Gathered
    parameters kept live are capped at two decoder layers (DeepSpeed's 1e9 default, reached at 70B,
    would keep a small model whole on every rank after its first forward pass)."""
    ds = read_accelerate_config(sharding)["deepspeed_config"]
    # No 16-bit gather at save: the Trainer's checkpoints keep DeepSpeed's own sharded files (what a
    # resume reads), and llamak writes the final weights itself, one gathered tensor at a time
    # (`common.save_zero3_weights`) — a gather would put the whole model on rank 0 at every save.
    zero: dict = {"stage": int(ds.get("zero_stage", 3)), "stage3_gather_16bit_weights_on_model_save": False}
    if layer_parameters:
        live = min(DEEPSPEED_LIVE_PARAMETERS, 2 * layer_parameters)
        zero |= {"stage3_max_live_parameters": live, "stage3_max_reuse_distance": live}
    for kind in ("optimizer", "param"):
        device = ds.get(f"offload_{kind}_device", "none")
        if device and device != "none":
            zero[f"offload_{kind}"] = {"device": device, "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
    }


def fsdp_fields(sharding: str = "fsdp2") -> dict:
    """TrainingArguments' `fsdp`/`fsdp_config` for FSDP2, from the accelerate config's `fsdp_config`."""
    f = read_accelerate_config(sharding)["fsdp_config"]
    layer_classes = f.get("fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer")
    options = "full_shard auto_wrap" + (" offload" if f.get("fsdp_offload_params") else "")
    return {
        "fsdp": options,
        "fsdp_config": {
            "version": int(f.get("fsdp_version", 2)),
            "reshard_after_forward": bool(f.get("fsdp_reshard_after_forward", True)),
            "transformer_layer_cls_to_wrap": [c.strip() for c in str(layer_classes).split(",")],
            "state_dict_type": f.get("fsdp_state_dict_type", "SHARDED_STATE_DICT"),
            "cpu_ram_efficient_loading": bool(f.get("fsdp_cpu_ram_efficient_loading", True)),
            "activation_checkpointing": bool(f.get("fsdp_activation_checkpointing", True)),
        },
    }


def gpu_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def trainer_fields(sharding: str, checkpoint_dtype, model_config: dict | None = None) -> dict:
    """The Trainer config fields for a sharding: hardware flags, and DeepSpeed/FSDP settings.

    bf16 mixed precision on GPUs that support it; on a CPU only under DeepSpeed for a bf16
    checkpoint (DeepSpeed keeps the float32 master shards; CPUs without bf16 arithmetic are slow at
    it, so float32 checkpoints train in float32)."""
    import torch

    cuda = torch.cuda.is_available()
    bf16 = gpu_bf16() or (sharding in DEEPSPEED and checkpoint_dtype == torch.bfloat16)
    fields: dict = {"use_cpu": not cuda, "bf16": bf16}
    if sharding in DEEPSPEED:
        fields["deepspeed"] = deepspeed_config(sharding, Shape.from_config(model_config).per_layer if model_config else None)
    elif sharding == "fsdp2":
        if not cuda:
            raise LlamakError(FSDP2_NEEDS_GPUS)
        fields |= fsdp_fields(sharding)
    return fields


def load_dtype(sharding: str, checkpoint_dtype, bf16: bool):
    """The dtype weights load in: never a whole float32 copy where a sharding engine keeps the masters.

    Sharded: the checkpoint's own dtype (the engine keeps sharded float32 masters). Replicated on a
    bf16 GPU: the checkpoint's dtype too (trainable parameters are upcast afterwards). Replicated
    without bf16 compute (CPUs): float32."""
    import torch

    if sharding in SHARDED or bf16:
        return checkpoint_dtype
    return torch.float32


def prepare_process_group(sharding: str) -> None:
    """Start the process group the way the engine needs it, before anything else creates one.

    DeepSpeed on CPUs: `deepspeed.init_distributed(gloo)` first — the Trainer's CPU path would create
    a plain gloo group that DeepSpeed's own communication layer does not know, and `zero.Init` would
    then size batches for a world of one. On GPUs the Trainer starts DeepSpeed itself (NCCL)."""
    import torch

    if sharding in DEEPSPEED and not torch.cuda.is_available() and "MASTER_ADDR" in os.environ:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
    if sharding == "fsdp2":
        # what `accelerate launch` sets for FSDP: transformers then loads weights on rank 0 only
        os.environ.setdefault("ACCELERATE_USE_FSDP", "true")
        os.environ.setdefault("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")


def require_engine(sharding: str) -> None:
    """A one-line error before launching when the sharding's engine is missing (package or GPUs)."""
    import importlib.util

    import torch

    if sharding == "fsdp2" and not torch.cuda.is_available():
        raise LlamakError(FSDP2_NEEDS_GPUS)
    if sharding in DEEPSPEED and importlib.util.find_spec("deepspeed") is None:
        raise LlamakError(f"sharding {sharding} needs DeepSpeed: pip install 'llamak[deepspeed]' (or pip install deepspeed)")


def upcast_trainable(model) -> int:
    """Replicated training from a bf16 checkpoint: the trainable parameters become float32 (the
    optimizer's master copy), frozen ones stay in the checkpoint's dtype. Returns how many moved."""
    import torch

    moved = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            moved += 1
    return moved


def check_sequence_parallel(size: int, shape: Shape, world_size: int, sharding: str, where: str) -> None:
    """Ulysses splits the attention heads over the SP group, the group lives inside the world, and
    it runs on DeepSpeed: the one check for the dry run, the planner and the LongPO trainer."""
    if shape.heads % size or (shape.kv_heads % size and size % shape.kv_heads):
        raise LlamakError(f"{where}field 'sequence_parallel': {size} must divide the model's {shape.heads} attention heads "
                          f"and its {shape.kv_heads} key/value heads (or be a multiple of them)")
    if world_size % size:
        raise LlamakError(f"{where}field 'sequence_parallel': {size} does not divide the stage's {world_size} processes")
    if sharding not in DEEPSPEED:
        raise LlamakError(f"{where}field 'sequence_parallel': needs sharding zero3 (DeepSpeed Ulysses), the stage launches with {sharding}")

"""Size a recipe before running it — from model configs only, no weights.

`shapes(recipe, stages)` follows the model through the stages (expansion adds layers; chat vector,
training and merges keep the shape) and checks what can be checked without weights: expansion
positions, chat-vector and merge compatibility, trainable blocks, context lengths. `llamak run
--dry-run` is that check. `plan(...)` adds, per stage: parameters (total and trainable — in CPT of
the inserted blocks only they carry gradients and optimizer state), memory per GPU when the stage
is fully sharded (DeepSpeed ZeRO‑3 or FSDP2 full shard), whether it fits, disk, tokens, compute
and GPU‑hours, and energy. The formulas are pure functions below, each with its assumption.

Configs come from a stage's input: a local directory's config.json (and llamak.json layer map), a
built zoo model (or its known shape), a hub id's config shipped in resources/configs (Llama‑3.1 8B
and 70B, base and Instruct) or fetched from the hub when it is reachable.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llamak.errors import LlamakError
from llamak.shape import Shape, trainable_parts
from llamak.train.sharding import SHARDED, check_sequence_parallel

GB = 1e9
BF16, FP32 = 2, 4
# Bytes per parameter in mixed-precision AdamW training, fully sharded: bf16 weight + bf16 grad +
# fp32 master + Adam m and v (ZeRO‑3; FSDP2 keeps fp32 sharded params and grads instead: also 16).
TRAINABLE_BYTES = 16
OPTIMIZER_BYTES = 12  # fp32 master + m + v: what optimizer offload moves to CPU memory
FROZEN_BYTES = BF16
CHECKPOINTS_KEPT = 2  # the trainers' save_total_limit
GRPO_PROMPT_TOKENS = 256  # assumed prompt length for GRPO rollouts (its data sets it in reality)
USABLE_MEMORY = 0.9  # the rest goes to the CUDA context, NCCL buffers and fragmentation


# --------------------------------------------------------------------------- model shapes


# The zoo's shapes, so a dry run need not build a zoo model first.
ZOO_SHAPES = {
    "tiny-base": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=128256, max_position_embeddings=131072, tie_word_embeddings=False),
    "smollm2-135m-instruct": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                                  num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True),
}
ZOO_SHAPES["tiny-instruct"] = ZOO_SHAPES["tiny-base"]


def shipped_config(hub_id: str) -> dict | None:
    path = importlib.resources.files("llamak").joinpath("resources", "configs", *hub_id.split("/"), "config.json")
    return json.loads(path.read_text()) if path.is_file() else None


def read_shape(ref: str, role: str) -> Shape:
    """The shape of a model outside the recipe: zoo name, local directory or hub id (shipped or fetched)."""
    from llamak.lineage import inserted_layers, read_lineage
    from llamak.zoo import ZOO_PREFIX, cached_path, looks_like_hub_id

    if ref.startswith(ZOO_PREFIX):
        name = ref[len(ZOO_PREFIX):]
        built = cached_path(name) / "config.json" if name in ZOO_SHAPES else None
        if built and built.is_file():
            return read_shape(str(built.parent), role)
        if name not in ZOO_SHAPES:
            raise LlamakError(f"{role} {ref}: unknown zoo model (known: {', '.join(ZOO_SHAPES)})")
        return Shape.from_config(ZOO_SHAPES[name])
    path = Path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LlamakError(f"{role} {ref}: no config.json in that directory")
        config = json.loads((path / "config.json").read_text())
        lineage = read_lineage(path) or {}
        layer_map = lineage.get("layer_map")
        inserted = len(inserted_layers(layer_map)) if layer_map else 0
        return Shape.from_config(config, inserted)
    if not looks_like_hub_id(ref):
        raise LlamakError(f"{role} {ref!r}: no such directory")
    config = shipped_config(ref)
    if config is None:
        try:
            if any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
                raise ConnectionError("offline mode")  # huggingface_hub reads these only when imported
            from huggingface_hub import hf_hub_download

            config = json.loads(Path(hf_hub_download(ref, "config.json", etag_timeout=5)).read_text())
        except Exception as e:  # offline, gated, unknown
            raise LlamakError(f"{role} {ref}: no shipped config and the hub is unreachable ({type(e).__name__}); "
                              "give a local directory with its config.json") from None
    return Shape.from_config(config)


# --------------------------------------------------------------------------- following the recipe


@dataclass
class StageShape:
    name: str
    type: str
    input: str
    shape: Shape | None  # the model this stage makes (None: data, eval, card)
    input_shape: Shape
    notes: list[str] = field(default_factory=list)


def shapes(recipe, stages, where: str = "recipe", override=None) -> list[StageShape]:
    """Each stage's input and output shape; raises LlamakError naming the stage and field on a mismatch."""
    from llamak.recipe import STAGES, resolve_stages
    from llamak.surgery.expand import check_after, default_insert_after

    known: dict[str, Shape] = {}

    def shape_of(ref: str, role: str) -> Shape:
        if ref in known:
            return known[ref]
        target = {"base": recipe.base, "instruct": recipe.instruct}.get(ref, ref)
        if target is None:
            raise LlamakError(f"{where}: {role}: the recipe has no `instruct` model")
        known[ref] = read_shape(target, role)
        return known[ref]

    out: list[StageShape] = []
    resolved = resolve_stages(recipe, stages, Path("runs") / recipe.name, override)  # the runner's inputs and launch, exactly
    for i, (stage, r) in enumerate(zip(stages, resolved), 1):
        cfg = stage.config
        here = f"{where}: stage {i} ({stage.type})"
        input_ref = r.input
        shape = shape_of(input_ref, f"{here}: model")
        made: Shape | None = shape
        notes: list[str] = []
        if stage.type == "expand":
            try:
                after = check_after(cfg.after, shape.layers) if cfg.after else default_insert_after(shape.layers, cfg.blocks or 0)
            except LlamakError as e:
                raise LlamakError(f"{here}: {e}".replace("--blocks", "field 'blocks'").replace("--after", "field 'after'")) from None
            made = replace(shape, layers=shape.layers + len(after), inserted=shape.inserted + len(after))
            notes.append(f"+{len(after)} blocks after layers {_ranges(after)}")
        elif stage.type == "vocab":
            made = replace(shape, vocab=shape.vocab + cfg.add, added_tokens=shape.added_tokens + cfg.add)
            notes.append(f"+{cfg.add:,} Korean tokens at most (vocab {shape.vocab:,} → {made.vocab:,})")
        elif stage.type == "chat_vector":
            base, instruct = shape_of(cfg.base or "base", f"{here}: base"), shape_of(cfg.instruct or "instruct", f"{here}: instruct")
            if _width(base) != _width(instruct) or base.layers != instruct.layers:
                raise LlamakError(f"{here}: base and instruct differ in shape ({_describe(base)} vs {_describe(instruct)})")
            # an expanded vocabulary is fine: its old rows get the vector, the new ones none
            if _width(shape)[:-1] != _width(base)[:-1] or shape.vocab < base.vocab or shape.original_layers != base.original_layers:
                raise LlamakError(f"{here}: model {input_ref!r} ({_describe(shape)}) is not the base's shape or an expansion of it ({_describe(base)})")
        elif stage.type == "merge":
            refs = cfg.model_refs()
            others = [(r, shape_of(r, f"{here}: models")) for r in refs]
            first_ref, first = others[0]
            for ref, other in others[1:]:
                if _width(other)[:-1] != _width(first)[:-1] or other.layers != first.layers:  # vocabularies may differ
                    raise LlamakError(f"{here}: models {first_ref!r} ({_describe(first)}) and {ref!r} ({_describe(other)}) do not share a shape")
            made = first
        elif STAGES[stage.type].trains:
            parts = trainable_parts(cfg.trainable)
            if "inserted" in parts and shape.inserted == 0:
                raise LlamakError(f"{here}: field 'trainable': 'inserted' needs an expanded input, and {input_ref!r} has no inserted blocks")
            if "new_embeddings" in parts and shape.added_tokens == 0 and not _has_vocab_map(input_ref, recipe):
                raise LlamakError(f"{here}: field 'trainable': 'new_embeddings' needs a vocab stage before it; {input_ref!r} has no added tokens")
            longest = _sequence(stage)
            if shape.max_positions and longest > shape.max_positions and not getattr(cfg, "rope_parameters", None) and not getattr(cfg, "rope_theta", None):
                raise LlamakError(f"{here}: sequences of {longest} tokens exceed the model's max_position_embeddings "
                                  f"{shape.max_positions}; set rope_parameters (or rope_theta) to extend it")
            sp = getattr(cfg, "sequence_parallel", 1)
            if sp > 1:
                check_sequence_parallel(sp, shape, r.launch.world_size, r.launch.sharding, f"{here}: ")
                notes.append(f"sequence parallel ×{sp} (Ulysses)")
            if getattr(cfg, "use_vllm", False) and importlib.util.find_spec("vllm") is None:
                notes.append("generates with vLLM (not installed here)")
        if stage.type == "data":
            made = None
            if cfg.executor == "ray" and importlib.util.find_spec("ray") is None:
                notes.append("executor ray (not installed here)")
        if stage.type in ("eval", "card"):
            made = None
            if getattr(cfg, "engine", "auto") == "vllm" and importlib.util.find_spec("vllm") is None:
                notes.append("engine vllm (not installed here)")
        packed = getattr(cfg, "packed", None)
        if packed:
            tokenizer_shape = next(s.input_shape for s in out if s.name == packed)
            if tokenizer_shape.vocab != shape.vocab:
                raise LlamakError(f"{here}: field 'packed': stage {packed!r} packed with a {tokenizer_shape.vocab}-token vocabulary, the model has {shape.vocab}")
        if made is not None:
            known[stage.name] = made
        if STAGES[stage.type].launched and r.launch.launched:
            notes.append(f"launched: {r.launch.world_size} processes ({r.launch.processes} × {r.launch.nodes} nodes), {r.launch.sharding}")
        out.append(StageShape(stage.name, stage.type, input_ref, made, shape, notes))
    return out


def _has_vocab_map(ref: str, recipe) -> bool:
    """An external input (base, a path) that was expanded outside this recipe."""
    from llamak.checkpoint import VOCAB_MAP_FILE
    from llamak.zoo import resolve_model

    target = {"base": recipe.base, "instruct": recipe.instruct}.get(ref, ref)
    try:
        return (resolve_model(target) / VOCAB_MAP_FILE).is_file()
    except LlamakError:
        return False


def _width(s: Shape) -> tuple:
    return (s.hidden, s.intermediate, s.heads, s.kv_heads, s.vocab)


def _describe(s: Shape) -> str:
    return f"{s.layers} layers, hidden {s.hidden}, vocab {s.vocab}"


def _ranges(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 6 else f"{values[0]}, {values[1]}, …, {values[-1]}"


def _sequence(stage) -> int:
    """Longest sequence a training stage feeds the model."""
    cfg = stage.config
    longest = cfg.seq_len
    synth = getattr(cfg, "synth", None)
    if synth is not None:
        longest = max(longest, synth.long_tokens)
    if stage.type == "grpo":
        longest = GRPO_PROMPT_TOKENS + cfg.max_completion_length
    return longest


# --------------------------------------------------------------------------- the estimates


@dataclass
class Hardware:
    gpus: int | None = None  # GPUs of every training stage; None: each stage's launch (processes × nodes)
    gpus_per_node: int = 8
    gpu_memory_gb: float = 80.0
    peak_tflops: float = 989.0  # H100 SXM dense bf16
    mfu: float = 0.40
    tdp_watts: float = 700.0
    strategy: str | None = None  # zero3 | fsdp | ddp for every stage; None: each stage's launch sharding
    offload: bool = False  # optimizer state in CPU memory (ZeRO-Offload)


def stage_parallelism(launch, hw: Hardware) -> tuple[int, str, bool]:
    """(GPUs, sharding, offload) a training stage is sized with: its launch settings, unless the
    hardware flags override them; a stage launched without any sharding is planned as ZeRO-3 (what
    a GPU cluster would use). zero3/zero3_offload/fsdp2 shard states over every GPU; ddp keeps a
    whole copy on each."""
    gpus = hw.gpus or launch.world_size
    planned = "zero3" if launch.sharding == "none" else launch.sharding
    sharding = {"zero3": "zero3", "fsdp": "fsdp2", "ddp": "ddp"}.get(hw.strategy or "", planned)
    return gpus, sharding, hw.offload or sharding == "zero3_offload"


def state_memory(total: int, trainable: int, gpus: int, offload: bool = False) -> dict[str, float]:
    """Bytes per GPU of weights, gradients and optimizer state, all sharded over `gpus`."""
    frozen = total - trainable
    return {
        "weights": (FROZEN_BYTES * frozen + BF16 * trainable) / gpus,
        "gradients": BF16 * trainable / gpus,
        "optimizer": 0.0 if offload else OPTIMIZER_BYTES * trainable / gpus,
    }


def activation_memory(shape: Shape, seq: int, batch: int, checkpointing: bool) -> float:
    """Bytes of activations for one micro-batch in bf16 (flash/SDPA attention: no seq² scores).
    One layer keeps its norm outputs, q, k, v, attention and o outputs (8·h + 2·kv) and the SwiGLU
    tensors (5·intermediate). With checkpointing only each layer's input is kept, plus one layer's
    set while it is recomputed."""
    kv = shape.kv_heads * shape.head_dim
    per_layer = BF16 * seq * batch * (8 * shape.hidden + 2 * kv + 5 * shape.intermediate)
    if not checkpointing:
        return shape.layers * per_layer
    return shape.layers * BF16 * seq * batch * shape.hidden + per_layer


def logits_memory(shape: Shape, seq: int, batch: int) -> float:
    """bf16 logits plus their fp32 copy for the loss (a fused/chunked loss would remove most of it)."""
    return seq * batch * shape.vocab * (BF16 + FP32)


def gathered_memory(shape: Shape) -> float:
    """Full weights gathered for the layer being computed and the one prefetched, plus the embeddings."""
    return BF16 * (2 * shape.per_layer + shape.embedding)


def training_flops(shape: Shape, trainable: int, tokens: int, seq: int, checkpointing: bool) -> float:
    """6·N·T for trainable weights; frozen weights still pass activation gradients back: 4·N·T
    (an upper bound: layers below the first trainable one need none). The input embedding is a
    lookup and does no FLOPs. Causal attention adds 6·L·seq·d per token (forward 2·L·seq·d)."""
    dense = shape.total - shape.embedding
    frozen = max(dense - trainable, 0)
    attention_fwd = 2 * shape.layers * seq * shape.heads * shape.head_dim
    flops = (6 * min(trainable, dense) + 4 * frozen) * tokens + 3 * attention_fwd * tokens
    if checkpointing:
        flops += (2 * dense + attention_fwd) * tokens  # the forward pass again, during backward
    return flops


def forward_flops(shape: Shape, tokens: int, seq: int) -> float:
    """A reference model's forward pass (DPO, GRPO with a KL term, LongPO)."""
    return (2 * (shape.total - shape.embedding) + 2 * shape.layers * seq * shape.heads * shape.head_dim) * tokens


def gpu_hours(flops: float, hw: Hardware) -> float:
    return flops / (hw.peak_tflops * 1e12 * hw.mfu) / 3600


def context_parallel_needed(fixed: float, per_sequence: float, budget: float) -> int | None:
    """Smallest power-of-two degree that splits the sequence-dependent memory enough to fit (None: never)."""
    if fixed >= budget:
        return None
    degree = 1
    while fixed + per_sequence / degree > budget:
        degree *= 2
        if degree > 1024:
            return None
    return degree


@dataclass
class StagePlan:
    name: str
    type: str
    gpus: int | None = None
    sharding: str | None = None
    sequence_parallel: int = 1
    layers: int | None = None
    params: int | None = None
    trainable: int | None = None
    seq_len: int | None = None
    tokens: int | None = None
    memory_gb: dict = field(default_factory=dict)
    per_gpu_gb: float | None = None
    fits: str = "—"
    disk_gb: float | None = None
    pflops: float | None = None
    gpu_hours: float | None = None
    hours: float | None = None
    energy_kwh: float | None = None
    notes: list[str] = field(default_factory=list)


def plan_stage(stage, sized: StageShape, hw: Hardware, launch) -> StagePlan:
    from llamak.recipe import STAGES

    row = StagePlan(sized.name, sized.type, notes=list(sized.notes))
    shape = sized.shape or sized.input_shape
    row.layers, row.params = shape.layers, shape.total
    if sized.type in ("vocab", "expand", "chat_vector", "merge"):
        row.disk_gb = BF16 * shape.total / GB
        row.notes.append("streams tensors on CPU: no GPU")
        return row
    if not STAGES[sized.type].trains:
        row.layers = row.params = None
        row.notes.append({"data": "CPU (datatrove executor)", "eval": "GPU generation; not sized", "card": "text"}[sized.type])
        return row
    cfg = stage.config
    lora = cfg.lora
    trainable = shape.trainable(cfg.trainable, lora.r, len(lora.target_modules))
    seq = _sequence(stage)
    has_reference = sized.type in ("dpo", "longpo") or (sized.type == "grpo" and cfg.beta > 0)
    row.trainable, row.seq_len = trainable, seq
    gpus, sharding, offload = stage_parallelism(launch, hw)
    row.gpus, row.sharding = gpus, sharding
    shards = gpus if sharding in SHARDED else 1  # ddp/none: every GPU holds the whole model and its states

    memory = state_memory(shape.total, trainable, shards, offload)
    if has_reference:
        memory["reference"] = FROZEN_BYTES * shape.total / shards
    memory["gathered"] = gathered_memory(shape)
    memory["activations"] = activation_memory(shape, seq, cfg.batch_size, cfg.gradient_checkpointing)
    memory["logits"] = logits_memory(shape, seq, cfg.batch_size)
    sequence_memory = memory["activations"] + memory["logits"]
    if sized.type == "grpo" and getattr(cfg, "use_vllm", False):
        # vLLM colocated: its own bf16 weights, tensor-parallel within a node, plus KV cache (~10 % of memory)
        tp = 1
        while BF16 * shape.total / tp > 0.3 * hw.gpu_memory_gb * GB and tp < hw.gpus_per_node:
            tp *= 2
        memory["vllm"] = BF16 * shape.total / tp + 0.1 * hw.gpu_memory_gb * GB
        row.notes.append(f"vLLM colocated, tensor parallel {tp}")
    sp = getattr(cfg, "sequence_parallel", 1)
    row.sequence_parallel = sp
    total = sum(memory.values()) - sequence_memory * (1 - 1 / sp)  # each sequence split over `sp` GPUs
    budget = USABLE_MEMORY * hw.gpu_memory_gb * GB
    degree = sp
    if total <= budget:
        row.fits = "yes" if sp == 1 else f"yes: sequence parallel ×{sp}"
    else:
        total += sequence_memory * (1 - 1 / sp)
        degree = context_parallel_needed(total - sequence_memory, sequence_memory, budget) or 0
        row.fits = f"no: sequence parallel ×{degree}" if degree else "no: more GPUs or offload"
        if degree:  # then each sequence spreads over `degree` GPUs: that much less activation memory per GPU
            row.notes.append(f"needs sequence_parallel: {degree} (or activation offload); "
                             f"sized as {max(gpus // degree, 1)} data-parallel groups")
            total -= sequence_memory * (1 - 1 / degree)
    row.memory_gb = {k: round(v / GB, 2) for k, v in memory.items()}
    row.per_gpu_gb = total / GB

    # every GPU is data parallel under full sharding, unless sequences are split over `degree` GPUs
    sequences = cfg.max_steps * cfg.batch_size * cfg.grad_accum * max(gpus // max(degree, 1), 1)  # data-parallel groups
    if sized.type in ("dpo", "longpo"):
        tokens = 2 * sequences * seq  # chosen and rejected
    else:
        tokens = sequences * seq  # GRPO: the batch counts completions, with their prompts
    ref_tokens = tokens if has_reference else 0
    row.tokens = tokens

    flops = training_flops(shape, trainable, tokens, seq, cfg.gradient_checkpointing) + forward_flops(shape, ref_tokens, seq)
    if sized.type == "grpo":
        completions = sequences * cfg.max_completion_length
        flops += forward_flops(shape, completions, seq)  # generation: one forward per new token
        row.notes.append(f"generation counted at the same MFU (optimistic for decoding): {completions:,} tokens")
    row.pflops = flops / 1e15
    row.gpu_hours = gpu_hours(flops, hw)
    row.hours = row.gpu_hours / gpus
    row.energy_kwh = row.gpu_hours * hw.tdp_watts / 1000
    checkpoint = BF16 * shape.total + OPTIMIZER_BYTES * trainable
    row.disk_gb = (BF16 * shape.total + CHECKPOINTS_KEPT * checkpoint) / GB
    return row


def plan(recipe, stages, hw: Hardware, where: str = "recipe", override=None) -> dict:
    """The plan of every stage; `override`: the command line's launch settings (as for `llamak run`)."""
    from llamak.recipe import resolve_stages

    sized = shapes(recipe, stages, where, override)
    resolved = resolve_stages(recipe, stages, Path("runs") / recipe.name, override)
    rows = [plan_stage(r.stage, s, hw, r.launch) for r, s in zip(resolved, sized)]
    totals = {
        "gpu_hours": sum(r.gpu_hours or 0 for r in rows),
        "hours": sum(r.hours or 0 for r in rows),
        "energy_kwh": sum(r.energy_kwh or 0 for r in rows),
        "disk_gb": sum(r.disk_gb or 0 for r in rows),
        "tokens": sum(r.tokens or 0 for r in rows),
    }
    return {"recipe": recipe.name, "hardware": asdict(hw), "stages": [asdict(r) for r in rows], "totals": totals}


# --------------------------------------------------------------------------- printing


def human(n: float | None, unit: str = "") -> str:
    if n is None:
        return "—"
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def quantity(value: float | None) -> str:
    """GB, hours, kWh for a table: three significant digits, no exponents."""
    if value is None:
        return "—"
    return "<0.01" if 0 < value < 0.01 else f"{value:,.0f}" if value >= 1000 else f"{value:.3g}"


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def hardware_line(hw: dict) -> str:
    """The plan's hardware in words (the plan table's and the report's first line)."""
    gpus = f"{hw['gpus']} GPUs" if hw["gpus"] else "GPUs per stage launch"
    strategy = hw["strategy"] or "sharding per stage launch"
    return (f"{gpus} × {hw['gpu_memory_gb']:g} GB, {hw['peak_tflops']:g} TFLOP/s peak, MFU {hw['mfu']:.0%}, "
            f"{strategy}{' + optimizer offload' if hw['offload'] else ''}, TDP {hw['tdp_watts']:g} W")


def table(result: dict) -> str:
    hw = result["hardware"]
    lines = [f"{result['recipe']}: {hardware_line(hw)}",
             f"{'stage':<12}{'type':<12}{'layers':>7}{'params':>9}{'trainable':>10}{'seq':>8}{'tokens':>9}{'GPUs':>6} {'sharding':<14}{'GB/GPU':>7}  {'fits':<28}{'disk GB':>9}{'GPU-h':>9}{'hours':>8}{'kWh':>9}"]
    for r in result["stages"]:
        lines.append(
            f"{r['name']:<12}{r['type']:<12}{_fmt(r['layers'], 'd'):>7}{human(r['params']):>9}{human(r['trainable']):>10}"
            f"{human(r['seq_len']):>8}{human(r['tokens']):>9}{_fmt(r['gpus'], 'd'):>6} {r['sharding'] or '—':<14}{_fmt(r['per_gpu_gb'], '.1f'):>7}  {r['fits']:<28}"
            f"{quantity(r['disk_gb']):>9}{quantity(r['gpu_hours']):>9}{quantity(r['hours']):>8}{quantity(r['energy_kwh']):>9}")
    t = result["totals"]
    lines.append(f"total: {human(t['tokens'])} training tokens, {t['gpu_hours']:,.0f} GPU-hours ({t['hours']:,.1f} h of training), "
                 f"{t['energy_kwh']:,.0f} kWh (GPUs at TDP), {t['disk_gb']:,.0f} GB of outputs and checkpoints")
    for r in result["stages"]:
        for note in r["notes"]:
            lines.append(f"  {r['name']}: {note}")
    return "\n".join(lines)

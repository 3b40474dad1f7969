"""LLaMA-Pro block expansion (Wu et al., ACL 2024, arXiv 2401.02415), streamed tensor by tensor.

After chosen layers, insert a copy of that layer whose residual output projections (`self_attn.o_proj`
and `mlp.down_proj`) are zero, so each new block is an identity map at initialisation and the expanded
model computes exactly the original function. Default placement is the paper's and LLaMA-Factory's:
split the L layers into N equal groups and insert one copy after the last layer of each group.

Departures from the reference scripts (TencentARC `block_expansion.py`, LLaMA-Factory `llama_pro.py`):
1. streams one tensor at a time (they load the whole model), and unchanged tensors are copied
   byte for byte, so expanding 70B needs no more memory than its largest tensor;
2. updates `num_hidden_layers` and every per-layer config list itself;
3. records the layer map in `llamak.json` (composed with the input's map if it was already expanded),
   so later stages know which blocks are new without a stride formula;
4. `after` may list any layers, not only the evenly spaced ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llamak.checkpoint import ModelDir, copy_side_files, write_config
from llamak.errors import CheckpointError, LlamakError
from llamak.lineage import LayerMap, atomic_output, base_source, make_lineage, write_lineage
from llamak.surgery.plan import Copy, PlannedTensor, Zeros, execute, layer_name, split_layer_name
from llamak.surgery.tensors import DEFAULT_SHARD_BYTES, CheckpointReader

# Residual output projections of a decoder block: zero in an inserted block makes it the identity.
ZERO_INIT = ("self_attn.o_proj.", "mlp.down_proj.")


def is_zero_init(rest: str) -> bool:
    """Whether a per-layer tensor name (after 'layers.{i}.') is zeroed in an inserted block."""
    return rest.startswith(ZERO_INIT)


def default_insert_after(num_layers: int, blocks: int) -> list[int]:
    """Last layer of each of `blocks` equal groups: 32 layers, 8 blocks → 3, 7, …, 31."""
    if blocks < 1 or num_layers % blocks:
        valid = [n for n in range(1, num_layers + 1) if num_layers % n == 0]
        raise LlamakError(
            f"--blocks {blocks} must divide num_hidden_layers ({num_layers}) into equal groups; "
            f"valid values: {', '.join(map(str, valid))} (or place blocks with --after)"
        )
    group = num_layers // blocks
    return [group * (g + 1) - 1 for g in range(blocks)]


def check_after(after: list[int], num_layers: int) -> list[int]:
    if not after:
        raise LlamakError("--after needs at least one layer index")
    bad = [i for i in after if not 0 <= i < num_layers]
    if bad:
        raise LlamakError(f"--after {bad[0]}: layer indices must be in 0..{num_layers - 1}")
    if len(set(after)) != len(after):
        raise LlamakError("--after lists a layer twice; give each layer at most once")
    return sorted(after)


def layer_sources(num_layers: int, after: list[int]) -> list[tuple[int, bool]]:
    """For each output layer: (input layer it comes from, whether it is an inserted copy)."""
    sources = []
    for i in range(num_layers):
        sources.append((i, False))
        if i in after:
            sources.append((i, True))
    return sources


def expanded_layer_map(input_map: LayerMap, after: list[int]) -> LayerMap:
    """Compose the input's layer map with a new expansion; indices stay those of the original base."""
    return [
        {"origin": "inserted", "copy_of": base_source(input_map[i])} if inserted else dict(input_map[i])
        for i, inserted in layer_sources(len(input_map), after)
    ]


# Config fields that hold one entry per decoder layer (transformers 5 Llama-family configs).
PER_LAYER_FIELDS = ("layer_types", "no_rope_layers", "sliding_window_layers")


def expanded_config(config: dict, sources: list[tuple[int, bool]]) -> dict:
    """`num_hidden_layers` and every per-layer list (e.g. `layer_types`) follow the new layer order."""
    n = config["num_hidden_layers"]
    new = dict(config)
    for key in PER_LAYER_FIELDS:
        value = config.get(key)
        if isinstance(value, list) and len(value) == n:
            new[key] = [value[i] for i, _ in sources]
    if config.get("use_sliding_window") and "layer_types" not in config:
        # Qwen2-style `max_window_layers` (an index, not a list) cannot follow an expansion.
        raise LlamakError(
            "config uses use_sliding_window with max_window_layers but no layer_types; write layer_types "
            "into config.json first so the expansion can carry each layer's attention type"
        )
    new["num_hidden_layers"] = len(sources)
    return new


def plan_expansion(reader: CheckpointReader, sources: list[tuple[int, bool]], where: Path) -> list[PlannedTensor]:
    """Output tensors of the expanded model: copies, plus zeros for inserted residual projections."""
    per_layer: dict[int, list[tuple[str, str]]] = {}
    outside: list[str] = []
    prefix = None
    for name in reader.names():
        parsed = split_layer_name(name)
        if parsed is None:
            outside.append(name)
            continue
        prefix, index, rest = parsed
        per_layer.setdefault(index, []).append((name, rest))
    num_layers = max(i for i, _ in sources) + 1
    if sorted(per_layer) != list(range(num_layers)):
        raise CheckpointError(f"{where}: weights hold layers {sorted(per_layer)[:3]}…, config says {num_layers}")
    for index, tensors in per_layer.items():
        missing = [z for z in ZERO_INIT if not any(rest.startswith(z) for _, rest in tensors)]
        if missing:
            raise CheckpointError(
                f"{where}: layer {index} has no {missing[0].rstrip('.')} weights; "
                "LLaMA-Pro expansion needs Llama-style decoder blocks"
            )

    embeddings = [n for n in outside if "embed" in n]
    plan = [PlannedTensor(reader.spec(n), Copy("model", n)) for n in embeddings]
    for out_index, (src, inserted) in enumerate(sources):
        for name, rest in per_layer[src]:
            spec = reader.spec(name)
            spec = type(spec)(layer_name(prefix, out_index, rest), spec.dtype, spec.shape)
            op = Zeros() if inserted and is_zero_init(rest) else Copy("model", name)
            plan.append(PlannedTensor(spec, op))
    plan += [PlannedTensor(reader.spec(n), Copy("model", n)) for n in outside if n not in embeddings]
    return plan


@dataclass
class ExpandResult:
    out: Path
    after: list[int]
    layer_map: LayerMap
    num_layers: int


def expand(
    model: str | Path,
    out: str | Path,
    blocks: int | None = None,
    after: list[int] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,  # kernel copies are memory-bound: more threads measured no faster
) -> ExpandResult:
    """Expand `model` with LLaMA-Pro identity blocks into `out` (see the module docstring)."""
    src = ModelDir.open(model, role="model")
    n = src.num_layers
    if after is None:
        if blocks is None:
            raise LlamakError("give --blocks N (evenly spaced) or --after i,j,… (explicit positions)")
        after = default_insert_after(n, blocks)
    else:
        after = check_after(after, n)
        if blocks is not None and blocks != len(after):
            raise LlamakError(f"--blocks {blocks} disagrees with --after, which lists {len(after)} layers")
    sources = layer_sources(n, after)
    layer_map = expanded_layer_map(src.layer_map, after)
    with src.reader() as reader:
        plan = plan_expansion(reader, sources, src.path)
        with atomic_output(Path(out), overwrite) as tmp:
            execute(plan, {"model": reader}, tmp, max_shard_bytes, workers, desc="expand", progress=progress)
            copy_side_files(src.path, tmp)
            write_config(tmp, expanded_config(src.config, sources))
            lineage = make_lineage(
                "expand",
                {"blocks": len(after), "after": after},
                {"model": src.path},
                layer_map,
            )
            write_lineage(tmp, lineage)
    return ExpandResult(Path(out), after, layer_map, len(sources))

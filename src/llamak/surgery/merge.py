"""`llamak merge CONFIG.yaml --out DIR`: mergekit-compatible merges, streamed one tensor at a time.

Planning reads only configs, layer maps and safetensors headers: it checks the whole merge (methods,
parameters, shapes, layer maps) before a byte is written, then `plan.execute` streams it — each
output tensor is computed from the input tensors it needs and written into pre-laid-out shards, so
peak memory is about (inputs + 1) × the largest tensor per worker thread, never a model.

Layer maps (LLaMA-Pro expansions recorded in `llamak.json`): a `models:` merge pairs layer i with
layer i, so every input must share one layer map — merging a 34-layer expanded model with its
32-layer parent is refused with an explanation. With explicit `slices:` the user pairs layers, and
the output's layer map follows the slices.
"""

from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import yaml

from llamak.checkpoint import ModelDir, copy_side_files, require_same_architecture, write_config
from llamak.errors import ArchitectureMismatch, LlamakError
from llamak.lineage import LayerMap, identity_layer_map, inserted_layers, make_lineage, write_lineage
from llamak.surgery.expand import expanded_config
from llamak.surgery.merge_config import DTYPES, MergeConfig, load_merge_config, resolve
from llamak.surgery.merge_methods import RANDOM_METHODS, Method
from llamak.surgery.plan import Compute, Copy, PlannedTensor, execute, layer_name, split_layer_name
from llamak.surgery.tensors import DEFAULT_SHARD_BYTES, CheckpointReader, TensorSpec
from llamak.surgery.vocab_align import Alignment, align_rows, is_vocabulary_tensor, plan_alignment

log = logging.getLogger("llamak")
TRIM_EVERY = 2**30  # bytes merged between returns of freed memory to the OS (see plan.execute)
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float64: "float64"}


@dataclass(frozen=True)
class Source:
    """One input of an output slice: layers [start, end) of a model, with its own parameters."""

    ref: str
    start: int
    end: int
    params: dict | None = None


@dataclass(frozen=True)
class Slice:
    sources: tuple[Source, ...]
    base: str | None
    params: dict | None = None

    @property
    def length(self) -> int:
        return self.sources[0].end - self.sources[0].start


@dataclass
class MergeResult:
    out: Path
    method: str
    num_layers: int
    computed: int = 0
    copied: int = 0
    notes: list[str] = field(default_factory=list)


def describe_map(ref: str, layer_map: LayerMap) -> str:
    inserted = inserted_layers(layer_map)
    blocks = f"inserted blocks at {inserted}" if inserted else "no inserted blocks"
    return f"{ref} ({len(layer_map)} layers, {blocks})"


def output_slices(config: MergeConfig, models: dict[str, ModelDir]) -> list[Slice]:
    """mergekit's normalisation: `models:` becomes one full-depth slice (the base added if unlisted)."""
    if config.models:
        refs = [m.model for m in config.models]
        maps = {ref: models[ref].layer_map for ref in dict.fromkeys(refs + ([config.base_model] if config.base_model else []))}
        first, *others = maps
        for ref in others:
            if maps[ref] != maps[first]:
                raise ArchitectureMismatch(
                    f"{describe_map(first, maps[first])} and {describe_map(ref, maps[ref])} have different layer maps: "
                    "layer i of one is not layer i of the other. Merge models that share an expansion, or pair "
                    "layers yourself with explicit `slices:`"
                )
        sources = [Source(m.model, 0, models[m.model].num_layers, m.parameters) for m in config.models]
        if config.base_model and config.base_model not in refs:
            sources.append(Source(config.base_model, 0, models[config.base_model].num_layers))
        return [Slice(tuple(sources), config.base_model)]
    slices = []
    for i, s in enumerate(config.slices):
        sources = []
        for j, src in enumerate(s.sources):
            start, end = src.layer_range
            n = models[src.model].num_layers
            if not 0 <= start < end <= n:
                raise LlamakError(f"slices[{i}].sources[{j}].layer_range {[start, end]}: {src.model} has layers 0..{n} (end exclusive)")
            sources.append(Source(src.model, start, end, src.parameters))
        if len({src.end - src.start for src in sources}) > 1:
            raise LlamakError(f"slices[{i}]: every source of a slice must span the same number of layers")
        slices.append(Slice(tuple(sources), s.base_model or config.base_model, s.parameters))
    return slices


def check_slice_inputs(method: Method, slices: list[Slice]) -> None:
    for i, s in enumerate(slices):
        refs = [src.ref for src in s.sources]
        if method.base == "required" and s.base not in refs:
            raise LlamakError(f"slices[{i}]: {method.name} needs its base_model {s.base!r} among the slice's sources")
        limits = f"at least {method.min_inputs}" + (f" and at most {method.max_inputs}" if method.max_inputs else "")
        if len(refs) < method.min_inputs or (method.max_inputs and len(refs) > method.max_inputs):
            what = "models" if len(slices) == 1 else f"slices[{i}] sources"
            raise LlamakError(f"{method.name} takes {limits} input models (base included); {what} give {len(refs)}")


def output_layer_map(slices: list[Slice], models: dict[str, ModelDir], notes: list[str]) -> LayerMap:
    """Each output layer's map entry: the sources' common entry, else the base's (or first source's)."""
    out = []
    for s in slices:
        for offset in range(s.length):
            entries = {src.ref: models[src.ref].layer_map[src.start + offset] for src in s.sources}
            chosen = entries.get(s.base) or next(iter(entries.values()))
            if any(e != chosen for e in entries.values()):
                notes.append(f"output layer {len(out)} combines layers with different layer-map entries {list(entries.values())}; recorded as {chosen}")
            out.append(dict(chosen))
    return out


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed: DARE's masks depend on the run seed and the tensor, not on thread order."""
    return seed * 2**32 + zlib.crc32(name.encode())


def apply_method(*tensors: torch.Tensor, fn: Callable, cast: torch.dtype | None, align: dict | None = None, **params) -> torch.Tensor:
    """mergekit's `dtype` casts the inputs before merging; the method then computes block by block in float32.
    `align`: vocabulary rows laid out in the output's token order first (models with different vocabularies)."""
    if align is not None:
        tensors = tuple(align_rows(list(tensors), **align))
    if cast is not None:
        tensors = tuple(t.to(cast) for t in tensors)
    return fn(*tensors, **params)


class Planner:
    """Turns a checked config into one `PlannedTensor` per output tensor (no arithmetic here)."""

    def __init__(self, config: MergeConfig, models: dict[str, ModelDir], readers: dict[str, CheckpointReader], seed: int,
                 alignment: Alignment | None = None):
        self.config, self.models, self.readers, self.seed, self.alignment = config, models, readers, seed, alignment
        self.method = config.method
        self.cast = DTYPES[config.dtype] if config.dtype else None
        self.out_dtype = DTYPES.get(config.out_dtype or config.dtype or "")
        self.computed = self.copied = 0

    def tensor(self, out_name: str, inputs: list[tuple[Source, str]], s: Slice, t: float) -> PlannedTensor:
        specs = []
        for src, name in inputs:
            if name not in self.readers[src.ref]:
                raise ArchitectureMismatch(f"{src.ref} has no tensor {name} (needed for output tensor {out_name})")
            specs.append(self.readers[src.ref].spec(name))
        align = self.alignment is not None and is_vocabulary_tensor(out_name)
        compared = {spec.shape[1:] if align else spec.shape for spec in specs}  # aligned: rows may differ
        if len(compared) > 1:
            shapes = ", ".join(f"{src.ref}: {list(spec.shape)}" for (src, _), spec in zip(inputs, specs))
            raise ArchitectureMismatch(f"tensor {out_name}: shapes differ ({shapes}); merged models must share shapes and vocabulary")
        out_dtype = self.out_dtype or functools.reduce(torch.promote_types, [spec.dtype for spec in specs])
        out_spec = TensorSpec(out_name, out_dtype, (self.alignment.rows, *specs[0].shape[1:]) if align else specs[0].shape)

        method = self.method
        if method.base == "required":  # base first, per-input parameters aligned with the others
            base = next(src for src, _ in inputs if src.ref == s.base)
            ordered = [next(i for i in inputs if i[0] is base)] + [i for i in inputs if i[0] is not base]
            per_input = ordered[1:]
        else:
            ordered = per_input = inputs
        params = {}
        for p in method.params:
            if p.scope == "shared":
                params[p.name] = resolve(p, [s.params, self.config.parameters], out_name, t, f"{method.name}")
            else:
                params[p.name] = [
                    resolve(p, [src.params, s.params, self.config.parameters], name, t, f"{method.name}: model {src.ref}")
                    for src, name in per_input
                ]
        if align:
            params["align"] = self.alignment.inputs([src.ref for src, _ in ordered])
        elif method.name == "passthrough" and params["scale"] == [None] and out_dtype == specs[0].dtype and self.cast is None:
            self.copied += 1
            return PlannedTensor(out_spec, Copy(inputs[0][0].ref, inputs[0][1]))
        if "lambda" in params:
            params["lambda_"] = params.pop("lambda")
        params.update(method.fixed)
        if method.name in RANDOM_METHODS:
            params["seed"] = tensor_seed(self.seed, out_name)
        params["out_dtype"] = out_dtype
        fn = functools.partial(apply_method, fn=method.fn, cast=self.cast)
        self.computed += 1
        return PlannedTensor(out_spec, Compute(fn, tuple((src.ref, name) for src, name in ordered), params))

    def plan(self, slices: list[Slice], template: str) -> list[PlannedTensor]:
        """Embeddings from the first slice's sources, layers slice by slice, then norm/head from the last."""
        reader = self.readers[template]
        layer_rest: dict[int, list[str]] = {}
        prefix, outside = "model.layers.", []
        for name in reader.names():
            parsed = split_layer_name(name)
            if parsed is None:
                outside.append(name)
            else:
                prefix, index, rest = parsed
                layer_rest.setdefault(index, []).append(rest)
        pre = [n for n in outside if "embed" in n]
        post = [n for n in outside if n not in pre]
        plan = [self.tensor(n, [(src, n) for src in slices[0].sources], slices[0], 0.0) for n in pre]
        out_index = 0
        for s in slices:
            for offset in range(s.length):
                t = offset / (s.length - 1) if s.length > 1 else 1.0  # mergekit's gradient position
                first = s.sources[0]
                for rest in layer_rest.get(first.start + offset) or layer_rest[0]:
                    inputs = [(src, layer_name(prefix, src.start + offset, rest)) for src in s.sources]
                    plan.append(self.tensor(layer_name(prefix, out_index, rest), inputs, s, t))
                out_index += 1
        plan += [self.tensor(n, [(src, n) for src in slices[-1].sources], slices[-1], 0.0) for n in post]
        return plan


def open_models(config: MergeConfig, resolve_ref: Callable[[str], Path]) -> dict[str, ModelDir]:
    models = {ref: ModelDir.open(resolve_ref(ref), role=f"model {ref}") for ref in config.model_refs()}
    first, *others = models
    for ref in others:
        require_same_architecture(models[first], models[ref], (first, ref), layers=False)
        if bool(models[first].config.get("tie_word_embeddings")) != bool(models[ref].config.get("tie_word_embeddings")):
            raise ArchitectureMismatch(f"{first} and {ref} differ in tie_word_embeddings; merged models must agree")
    return models


def merge(
    config: MergeConfig | str | Path,
    out: str | Path,
    seed: int = 0,
    resolve_ref: Callable[[str], Path] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> MergeResult:
    """Merge the models a mergekit-style config names into `out` (a new Hugging Face model directory)."""
    from llamak.lineage import atomic_output
    from llamak.zoo import resolve_model

    if not isinstance(config, MergeConfig):
        config = load_merge_config(config)
    resolve_ref = resolve_ref or (lambda ref: resolve_model(ref, role=f"model {ref}"))
    models = open_models(config, resolve_ref)
    slices = output_slices(config, models)
    check_slice_inputs(config.method, slices)
    template = config.base_model or slices[0].sources[0].ref  # config, non-layer tensor names, side files
    result = MergeResult(Path(out), config.merge_method, sum(s.length for s in slices))
    layer_map = output_layer_map(slices, models, result.notes)
    alignment = plan_alignment(models, config.base_model, config.tokenizer_source, template)
    if alignment is not None:
        result.notes.append(f"vocabularies differ: rows laid out in {alignment.source}'s vocabulary ({alignment.rows:,} rows), "
                            "a token a model lacks takes mergekit's default row")
    readers = {ref: m.reader() for ref, m in models.items()}
    try:
        planner = Planner(config, models, readers, seed, alignment)
        plan = planner.plan(slices, template)
        result.computed, result.copied = planner.computed, planner.copied
        with atomic_output(Path(out), overwrite) as tmp:
            execute(
                plan, readers, tmp, max_shard_bytes, workers, f"merge ({config.merge_method})", progress, trim_every=TRIM_EVERY
            )
            tokenizer_ref = alignment.source if alignment else {None: template, "base": template, "union": template}.get(
                config.tokenizer_source, config.tokenizer_source)
            if tokenizer_ref not in models:
                raise LlamakError(f"tokenizer_source {tokenizer_ref!r}: not one of the merged models")
            copy_side_files(models[tokenizer_ref].path, tmp)
            if config.chat_template:
                (tmp / "chat_template.jinja").write_text(config.chat_template)
            config_out = output_config(models[template].config, slices, plan)
            if alignment is not None:
                config_out["vocab_size"] = alignment.rows
            write_config(tmp, config_out)
            (tmp / "merge.yaml").write_text(yaml.safe_dump({**config.model_dump(exclude_none=True), "seed": seed}, allow_unicode=True, sort_keys=False))
            identity = layer_map == identity_layer_map(len(layer_map))
            lineage = make_lineage(
                "merge",
                {"method": config.merge_method, "seed": seed, "config": config.model_dump(exclude_none=True)},
                {ref: m.path for ref, m in models.items()},
                None if identity else layer_map,
                notes=result.notes,
            )
            write_lineage(tmp, lineage)
    finally:
        for r in readers.values():
            r.close()
    for note in result.notes:
        log.warning(note)
    return result


def output_config(config: dict, slices: list[Slice], plan: list[PlannedTensor]) -> dict:
    """The template model's config with the output depth, per-layer fields and dtype."""
    n = config["num_hidden_layers"]
    sources = [(min(src.start + k, n - 1), False) for s in slices for src in s.sources[:1] for k in range(s.length)]
    new = expanded_config(config, sources)
    dtypes = {p.spec.dtype for p in plan if p.spec.dtype.is_floating_point}
    if len(dtypes) == 1:
        new["dtype"] = DTYPE_NAMES.get(dtypes.pop(), new.get("dtype"))
    return new


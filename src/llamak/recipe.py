"""Recipes: a YAML file that runs llamak's stages in order, resumably. The only code that knows stage order.

    llamak run recipes/tiny.yaml [--out runs] [--only STAGE] [--from STAGE] [--force]

```yaml
name: tiny-ko
base: zoo:tiny-base
instruct: zoo:tiny-instruct
stages:
  - data: {inputs: [data/ko/*.jsonl, data/en/*.jsonl], mix: {ko: 0.5, en: 0.5}, seq_len: 2048}
  - expand: {blocks: 2}
  - cpt: {trainable: inserted, packed: data}
  - chat_vector: {ratio: 1.0}
  - sft: {dataset: [data/sft/*.jsonl]}
```

Each stage writes `<out>/<name>/<stage>/`: a Hugging Face model directory, except `data`, which
writes clean/, mix/ and packed/ corpora (CPT names it in `packed:`). A stage reads the previous
model stage's output unless its `model:` names another (an earlier stage, `base`, `instruct`, `zoo:NAME` or
a path); repeat a stage type with `name:` (e.g. `- dpo: {name: dpo2, …}`). The manifest
(`manifest.json`) records each finished stage with a hash of its config, its inputs and its data
files: a rerun skips finished stages, a changed stage reruns with everything downstream (their
hashes include it), and a killed training stage resumes from its last Trainer checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llamak.energy import track_energy
from llamak.errors import LlamakError
from llamak.launch import Launch, LaunchSettings, env_settings, in_slurm_allocation, inside_launch, resolve_launch, run_launched
from llamak.lineage import content_hash, file_fingerprint

log = logging.getLogger("llamak")

MANIFEST = "manifest.json"


# --------------------------------------------------------------------------- stage configs


class StageFields(BaseModel):
    """Fields every stage accepts besides its own."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][\w.-]*$")  # defaults to the type; needed to repeat a type
    model: str | None = None  # input: an earlier stage, base, instruct, zoo:NAME or a path (default: previous stage)
    launch: LaunchSettings | None = None  # processes/nodes/sharding of a launched (training) stage; overrides the recipe's


class ExpandStage(StageFields):
    blocks: int | None = Field(None, gt=0)
    after: list[int] | None = None
    shard_size: str = "5GB"


class VocabStage(StageFields):
    """Korean vocabulary expansion: `{data: clean, add: 8000}` learns from a `data` stage's cleaned
    documents, `{corpus: [ko/*.jsonl], add: 8000}` from files."""

    data: str | None = None
    corpus: list[str] | None = None
    add: int = Field(gt=0)
    min_frequency: int = Field(2, ge=1)
    text_field: str = "text"
    shard_size: str = "5GB"

    @model_validator(mode="after")
    def _one_source(self):
        if (self.data is None) == (self.corpus is None):
            raise ValueError("give exactly one of `data` (a data stage's cleaned documents) or `corpus` (file globs)")
        return self

    def data_files(self) -> list[Path]:
        from llamak.files import expand_globs

        return expand_globs(self.corpus, "vocab.corpus") if self.corpus else []


class ChatVectorStage(StageFields):
    ratio: float = 1.0
    inserted: Literal["skip", "copy"] = "skip"
    skip_embeddings: bool = False
    base: str | None = None  # default: the recipe's base
    instruct: str | None = None  # default: the recipe's instruct
    shard_size: str = "5GB"


class MergeStage(StageFields):
    """A mergekit-style merge whose models may be earlier stages: `{method: slerp, models: [sft, chat_vector], t: 0.5}`.

    Takes mergekit's keys (`merge_method`, `base_model`, `models`, `slices`, `parameters`, `dtype`, …),
    `method:` for `merge_method`, plain names in `models`, and method parameters at the top level (e.g.
    `t`). SLERP without `base_model` interpolates from the first model (t=0) to the second (t=1).
    """

    model_config = ConfigDict(extra="allow")  # method parameters (t, weight, …) are checked by the merge config
    method: str | None = None
    merge_method: str | None = None
    seed: int = 0
    shard_size: str = "5GB"

    def merge_config(self):
        from llamak.surgery.merge_config import check_config

        data = dict(self.model_extra or {})
        method = self.merge_method or self.method
        data["merge_method"] = method
        data["models"] = [{"model": m} if isinstance(m, str) else m for m in data.get("models") or []] or None
        from llamak.surgery.merge_methods import METHODS

        known = METHODS.get(method)
        for key in [k for k in data if known and known.param(k)]:
            data.setdefault("parameters", {})
            data["parameters"] = {**(data["parameters"] or {}), key: data.pop(key)}
        if method == "slerp" and not data.get("base_model") and data["models"]:
            data["base_model"] = data["models"][0]["model"]
        return check_config({k: v for k, v in data.items() if v is not None})

    def model_refs(self) -> list[str]:
        return self.merge_config().model_refs()

    @model_validator(mode="after")
    def _check(self):
        try:
            self.merge_config()
        except LlamakError as e:
            raise ValueError(str(e)) from None
        return self


DATA_FIELDS = ("packed", "data")  # fields that name a `data` stage (the others name models)

# Fields that say where a stage runs, not what it makes: they do not enter its hash (changing them
# reruns nothing).
WHERE_NOT_WHAT = {"executor", "launch"}


class DataStage(StageFields):
    """clean → mix → pack; `model` is whose tokenizer packs (default: the recipe's base)."""

    inputs: list[str] = Field(min_length=1)
    lang: Literal["ko", "en", "auto"] = "auto"
    pii: Literal["mask", "drop", "off"] = "mask"
    profanity: Literal["mask", "drop", "off"] = "mask"
    quality: bool = True
    dedup: bool = True
    mix: dict[str, float] | None = None  # token shares; None: keep everything the cleaning kept
    tokens: int | None = Field(None, gt=0)
    seed: int = 0
    seq_len: int = Field(2048, ge=8)
    workers: int = Field(1, ge=1)
    # where `clean` runs: this machine, or a Ray cluster (blocking, like local). Slurm submits and
    # returns, so a recipe cannot wait for it: clean on Slurm with `llamak data clean` beforehand.
    executor: Literal["local", "ray"] = "local"

    @field_validator("mix")
    @classmethod
    def _shares(cls, mix):
        from llamak.train.cpt import check_shares

        return check_shares(mix)

    def data_files(self) -> list[Path]:
        from llamak.data.clean import input_files

        return input_files(self.inputs, "data.inputs")


def _eval_stage():
    from llamak.evaluate.harness import suite
    from llamak.evaluate.runner import EvalSettings

    class EvalStage(StageFields, EvalSettings):
        """Evaluate `models` (default: base and the stage's input) on `suites`; compare them."""

        suites: list[str] = Field(["ko-mini", "en-mini"], min_length=1)
        models: list[str] | None = None

        @field_validator("suites")
        @classmethod
        def _known(cls, names):
            for name in names:
                try:
                    suite(name)
                except LlamakError as e:
                    raise ValueError(str(e).removeprefix("--suite ")) from None
            return names

        def model_list(self) -> list[str]:
            return self.models or ["base", self.model or "input"]

    return EvalStage


def _run_eval(cfg, model: Path, out: Path, ctx: RunContext) -> dict:
    """Each model's suites into OUT/<model>/, and the comparison (scores and deltas vs the first model)."""
    import shutil

    from llamak.evaluate.runner import EvalSettings, compare, evaluate_model

    settings = EvalSettings(**{k: getattr(cfg, k) for k in EvalSettings.model_fields})
    tmp = Path(str(out) + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    results = {}
    for ref in cfg.model_list():
        path = model if ref == "input" else ctx.resolve(ref, f"eval model {ref}")
        name = ref if ref != "input" else (model.name if model.parent == ctx.run_dir else "input")
        log.info("  eval %s (%s): %s", name, path, ", ".join(cfg.suites))
        results[name] = evaluate_model(path, cfg.suites, settings, tmp / name)
    comparison = compare(results)
    (tmp / "comparison.json").write_text(json.dumps(comparison, indent=2, ensure_ascii=False) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return comparison


class CardStage(StageFields):
    """MODEL_CARD.md (Korean and English, Hugging Face metadata) from everything the run made so far."""

    license: str = "other"  # the card's license id, e.g. llama3.1 for a Llama-3.1 derivative


def _run_card(cfg: CardStage, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.card import write_card

    path = write_card(ctx.run_dir, out / "MODEL_CARD.md", cfg.license)
    (ctx.run_dir / "MODEL_CARD.md").write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return {"card": str(path)}


def _cpt_stage():
    from llamak.train.cpt import CptConfig

    return type("CptStage", (StageFields, CptConfig), {})


def _sft_stage():
    from llamak.train.sft import SftConfig

    return type("SftStage", (StageFields, SftConfig), {})


@dataclass
class StageType:
    config: Callable[[], type[BaseModel]]  # lazily built: training configs import pydantic models only
    run: Callable[..., dict]
    trains: bool = False
    launched: bool = False  # runs on the launched processes (see launch.py); otherwise in the driver
    makes_model: bool = True  # the next stage's default input
    refs: Callable[[BaseModel], list[tuple[str, str]]] = lambda config: []  # (field, model) it reads besides its input


def _run_expand(cfg: ExpandStage, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.surgery.expand import expand
    from llamak.units import parse_size

    result = expand(model, out, cfg.blocks, cfg.after, parse_size(cfg.shard_size, "shard_size"), overwrite=True)
    return {"after": result.after, "num_layers": result.num_layers}


def _run_vocab(cfg: VocabStage, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.surgery.vocab import expand_vocabulary
    from llamak.units import parse_size

    corpus = cfg.corpus or [str(ctx.run_dir / cfg.data / "clean" / "documents" / "*")]
    result = expand_vocabulary(model, corpus, out, cfg.add, cfg.min_frequency, cfg.text_field, parse_size(cfg.shard_size, "shard_size"),
                               overwrite=True)
    return {"added": result.added, "first_id": result.first_id, "korean_chars_per_token": result.korean_chars_per_token, "notes": result.notes}


def _run_chat_vector(cfg: ChatVectorStage, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.surgery.chat_vector import chat_vector
    from llamak.units import parse_size

    base = ctx.resolve(cfg.base or "base", "chat_vector.base")
    instruct = ctx.resolve(cfg.instruct or "instruct", "chat_vector.instruct")
    result = chat_vector(
        base, instruct, model, out, cfg.ratio, cfg.inserted, cfg.skip_embeddings, parse_size(cfg.shard_size, "shard_size"), overwrite=True
    )
    return {"added": result.added, "copied": result.copied, "notes": result.notes}


def _run_merge(cfg: MergeStage, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.surgery.merge import merge
    from llamak.units import parse_size

    resolve_ref = lambda ref: ctx.resolve(ref, f"merge model {ref}")  # noqa: E731
    result = merge(cfg.merge_config(), out, cfg.seed, resolve_ref, parse_size(cfg.shard_size, "shard_size"), overwrite=True)
    return {"method": result.method, "layers": result.num_layers, "merged": result.computed, "copied": result.copied, "notes": result.notes}


def _dpo_stage():
    from llamak.train.dpo import DpoConfig

    return type("DpoStage", (StageFields, DpoConfig), {})


def _grpo_stage():
    from llamak.train.grpo import GrpoConfig

    return type("GrpoStage", (StageFields, GrpoConfig), {})


def _longpo_stage():
    from llamak.train.longpo import LongpoConfig

    return type("LongpoStage", (StageFields, LongpoConfig), {})


def _run_longpo(cfg, model: Path, out: Path, ctx: RunContext | None) -> dict:
    from llamak.train.longpo import run_longpo

    return run_longpo(cfg, model, out)


def _run_dpo(cfg, model: Path, out: Path, ctx: RunContext | None) -> dict:
    from llamak.train.dpo import run_dpo
    from llamak.zoo import resolve_model

    reference = None
    if cfg.reference:
        reference = ctx.resolve(cfg.reference, "dpo.reference") if ctx else resolve_model(cfg.reference, role="reference")
    return run_dpo(cfg, model, out, reference)


def _run_grpo(cfg, model: Path, out: Path, ctx: RunContext | None) -> dict:
    from llamak.train.grpo import run_grpo

    return run_grpo(cfg, model, out)


def _run_data(cfg: DataStage, model: Path, out: Path, ctx: RunContext) -> dict:
    """Resumable: datatrove's completion markers let a rerun skip finished tasks; a changed config
    starts over (the folder records the config it was made with)."""
    import shutil

    from llamak.data.clean import CleanOptions, ExecutorOptions, clean
    from llamak.data.mix import mix
    from llamak.data.pack import pack

    settings = cfg.model_dump(mode="json", exclude={"name", *WHERE_NOT_WHAT})
    record = out / "data-stage.json"
    if out.exists() and (not record.is_file() or json.loads(record.read_text()) != settings):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(settings, indent=2) + "\n")
    options = CleanOptions(lang=cfg.lang, pii=cfg.pii, profanity=cfg.profanity, quality=cfg.quality, dedup=cfg.dedup)
    progress = lambda message: log.info("  data: %s", message)  # noqa: E731
    summary = clean(cfg.inputs, out / "clean", options, ExecutorOptions(kind=cfg.executor, workers=cfg.workers), progress=progress)
    documents = out / "clean" / "documents"
    metrics: dict = {"clean": summary_counts(summary)}
    if cfg.mix:
        metrics["mix"] = mix([str(documents)], model, out / "mix", cfg.mix, cfg.seed, cfg.tokens, cfg.workers, progress=progress)
        documents = out / "mix" / "documents"
    metrics["pack"] = pack([str(documents)], model, out / "packed", cfg.seq_len, cfg.workers, progress=progress)
    return metrics


def summary_counts(summary: dict) -> dict:
    """The clean run's headline numbers for the manifest: documents read, kept, and why others went."""
    from llamak.data.clean import step_stats

    first = summary.get("filter", {})
    read = step_stats(summary, "filter", "corpus").get("documents", 0)
    last_stage = list(summary)[-1] if summary else "filter"
    kept = next((c.get("forwarded", 0) for name, c in reversed(list(summary.get(last_stage, {}).items())) if "forwarded" in c), 0)
    dropped = {k.removeprefix("dropped_"): v for step in first.values() for k, v in step.items() if k.startswith("dropped_")}
    for stage in ("exact-3", "minhash-4"):
        for c in summary.get(stage, {}).values():
            if c.get("dropped"):
                dropped[stage.split("-")[0] + "_duplicate"] = c["dropped"]
    masked = {k: v for step in first.values() for k, v in step.items() if k.startswith(("pii_", "profanity_"))}
    return {"read": read, "kept": kept, "dropped": dropped, "masked": masked}


def _run_cpt(cfg, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.train.cpt import run_cpt

    return run_cpt(cfg, model, out)


def _run_sft(cfg, model: Path, out: Path, ctx: RunContext) -> dict:
    from llamak.train.sft import run_sft

    return run_sft(cfg, model, out)


STAGES: dict[str, StageType] = {
    "data": StageType(lambda: DataStage, _run_data, makes_model=False),
    "vocab": StageType(lambda: VocabStage, _run_vocab, refs=lambda c: [("data", c.data)] if c.data else []),
    "expand": StageType(lambda: ExpandStage, _run_expand),
    "chat_vector": StageType(
        lambda: ChatVectorStage, _run_chat_vector, refs=lambda c: [("base", c.base or "base"), ("instruct", c.instruct or "instruct")]
    ),
    "merge": StageType(lambda: MergeStage, _run_merge, refs=lambda c: [("models", r) for r in c.model_refs()]),
    "cpt": StageType(_cpt_stage, _run_cpt, trains=True, launched=True),
    "sft": StageType(_sft_stage, _run_sft, trains=True, launched=True),
    "dpo": StageType(_dpo_stage, _run_dpo, trains=True, launched=True, refs=lambda c: [("reference", c.reference)] if c.reference else []),
    "grpo": StageType(_grpo_stage, _run_grpo, trains=True, launched=True),
    "longpo": StageType(_longpo_stage, _run_longpo, trains=True, launched=True),
    "card": StageType(lambda: CardStage, _run_card, makes_model=False),
    "eval": StageType(_eval_stage, _run_eval, makes_model=False, refs=lambda c: [("models", r) for r in c.model_list() if r != "input"]),
}


# --------------------------------------------------------------------------- recipe


@dataclass
class Stage:
    type: str
    name: str
    config: BaseModel


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[\w.-]+$")
    base: str
    instruct: str | None = None
    sample: list[str] = ["대한민국의 수도는 어디인가요?", "Summarise in one sentence: Seoul is the capital of South Korea."]
    energy: bool = True  # kWh and CO₂ of every stage (codecarbon's offline tracker)
    energy_country: str = Field("KOR", pattern=r"^[A-Z]{3}$")  # ISO 3166 alpha-3: the grid's carbon intensity
    launch: LaunchSettings | None = None  # how training stages are launched: {processes, nodes, sharding}
    stages: list[dict] = Field(min_length=1)


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def read_yaml_mapping(path: Path, expected: str) -> dict:
    """A YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise LlamakError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LlamakError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise LlamakError(f"{path}: expected a mapping with {expected}")
    return raw


def validate(model: type[BaseModel], data: dict, where: str) -> BaseModel:
    """Pydantic validation whose first error becomes one line: where, field, message."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        if not err["loc"]:  # a whole-model check (e.g. a merge config): its message names the field
            raise LlamakError(f"{where}{err['msg'].removeprefix('Value error, ')}") from None
        raise LlamakError(f"{where}field {_field_path(err['loc'])!r}: {err['msg']}") from None


def load_recipe(path: Path) -> tuple[Recipe, list[Stage]]:
    """Parse and validate a recipe; every error is one line naming the file, stage and field."""
    recipe = validate(Recipe, read_yaml_mapping(path, "name, base and stages"), f"{path}: ")
    stages: list[Stage] = []
    for i, item in enumerate(recipe.stages, 1):
        if not isinstance(item, dict) or len(item) != 1:
            raise LlamakError(f"{path}: stage {i}: expected one mapping `- TYPE: {{fields}}`, got {item!r}")
        (kind, fields), = item.items()
        if kind not in STAGES:
            raise LlamakError(f"{path}: stage {i}: unknown stage type {kind!r} (known: {', '.join(STAGES)})")
        config = validate(STAGES[kind].config(), fields or {}, f"{path}: stage {i} ({kind}): ")
        name = config.name or kind
        if name in {s.name for s in stages} or name in ("base", "instruct"):
            raise LlamakError(f"{path}: stage {i} ({kind}): name {name!r} is already used; give it `name:`")
        stages.append(Stage(kind, name, config))
    names = [s.name for s in stages]
    for i, stage in enumerate(stages, 1):
        fields = [(f, getattr(stage.config, f, None)) for f in ("model", "packed")]
        for field, ref in fields + STAGES[stage.type].refs(stage.config):
            if ref in names and names.index(ref) >= i - 1:
                raise LlamakError(f"{path}: stage {i} ({stage.type}): {field} {ref!r} names a stage that has not run yet")
            if ref in names and (field in DATA_FIELDS) == STAGES[stages[names.index(ref)].type].makes_model:
                what = "a `data` stage" if field in DATA_FIELDS else "a stage that makes a model"
                raise LlamakError(f"{path}: stage {i} ({stage.type}): {field} {ref!r} must name {what}")
    return recipe, stages


def load_stage_file(kind: str, path: Path) -> tuple[BaseModel, Path, Path]:
    """A standalone stage config (`llamak train KIND CONFIG`): stage fields plus `model:` and `out:`."""
    from llamak.zoo import resolve_model

    raw = read_yaml_mapping(path, f"`model:`, `out:` and the {kind} fields")
    if not raw.get("model") or not raw.get("out"):
        raise LlamakError(f"{path}: expected a mapping with `model:`, `out:` and the {kind} fields")
    out = Path(raw.pop("out"))
    config = validate(STAGES[kind].config(), raw, f"{path}: ")
    return config, resolve_model(config.model, role="model"), out


# --------------------------------------------------------------------------- runner


@dataclass
class RunContext:
    recipe: Recipe
    run_dir: Path
    stage_names: list[str]

    def resolve(self, ref: str, what: str) -> Path:
        """A model reference → a local directory: an earlier stage's output, base/instruct, zoo or path."""
        from llamak.zoo import resolve_model

        if ref in self.stage_names:
            return self.run_dir / ref
        if ref == "base":
            return resolve_model(self.recipe.base, role="recipe base")
        if ref == "instruct":
            if not self.recipe.instruct:
                raise LlamakError(f"{what}: the recipe has no `instruct` model")
            return resolve_model(self.recipe.instruct, role="recipe instruct")
        return resolve_model(ref, role=what)


def data_ref(stage: Stage, names: list[str]) -> str | None:
    """The `data` stage a CPT stage trains on (`packed: NAME`), if it names one."""
    ref = getattr(stage.config, "packed", None)
    return ref if ref in names else None


def with_stage_paths(stage: Stage, run_dir: Path, names: list[str]) -> Stage:
    """`packed: data` (a stage name) → that stage's packed/ folder."""
    ref = data_ref(stage, names)
    if ref is None:
        return stage
    return Stage(stage.type, stage.name, stage.config.model_copy(update={"packed": str(run_dir / ref / "packed")}))


@dataclass
class ResolvedStage:
    """A stage as running, planning and dry-running all see it: its inputs and where it runs."""

    stage: Stage  # `packed: data` already turned into that stage's packed/ folder
    input: str  # the model reference it reads: an earlier stage, base, instruct, zoo:NAME or a path
    reads: list[str]  # other references it reads (chat vector's base/instruct, merge models, packed data, …)
    launch: Launch  # processes, nodes and sharding (world size 1, in the driver, for untrained stages)


def resolve_stages(recipe: Recipe, stages: list[Stage], run_dir: Path, override: LaunchSettings | None = None) -> list[ResolvedStage]:
    """Every stage's input, other references and launch settings — the one place they are decided.

    A stage reads the previous model-making stage's output unless `model:` says otherwise; a `data`
    stage packs with the recipe's base tokenizer. Launch settings: the recipe's `launch:`, then the
    stage's, then NPROC_PER_NODE/NNODES, then the command line (`override`)."""
    names = [s.name for s in stages]
    env = env_settings()
    resolved: list[ResolvedStage] = []
    previous = "base"
    for stage in stages:
        kind = STAGES[stage.type]
        input_ref = stage.config.model or ("base" if stage.type == "data" else previous)
        if kind.makes_model:
            previous = stage.name
        reads = [ref for _, ref in kind.refs(stage.config)]
        if data_ref(stage, names):
            reads.append(data_ref(stage, names))
            stage = with_stage_paths(stage, run_dir, names)
        launch = resolve_launch(recipe.launch, stage.config.launch, env, override) if kind.launched else Launch()
        resolved.append(ResolvedStage(stage, input_ref, reads, launch))
    return resolved


def stage_hash(stage: Stage, input_key: str, extra_keys: list[str]) -> str:
    """Hash of what determines a stage's output: type, config, inputs (upstream hashes) and data files."""
    data = getattr(stage.config, "data_files", lambda: [])()
    payload = {
        "type": stage.type,
        "config": stage.config.model_dump(mode="json", exclude={"name", *WHERE_NOT_WHAT}),
        "input": input_key,
        "extra": extra_keys,
        "data": [[str(f), file_fingerprint(f)] for f in data],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(run_dir: Path) -> dict:
    path = run_dir / MANIFEST
    if not path.is_file():
        return {"stages": {}}
    try:
        manifest = json.loads(path.read_text())
        assert isinstance(manifest.get("stages"), dict)
        return manifest
    except (ValueError, AssertionError, AttributeError):
        raise LlamakError(f"{path}: corrupt manifest; delete it to rerun every stage") from None


def write_manifest(run_dir: Path, manifest: dict) -> None:
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(run_dir / MANIFEST)


class Processes:
    """Rank awareness under `accelerate launch`: training stages run on every process; surgery,
    the manifest, the report and samples on the main one, with a barrier after each stage."""

    def __init__(self):
        from llamak.train.common import process_state

        self.state = process_state()

    @property
    def is_main(self) -> bool:
        return self.state is None or self.state.is_main_process

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()


def preflight(ctx: RunContext, stages: list[Stage], recipe_path: Path) -> None:
    """Check every data glob and external model path before any stage runs."""
    from llamak.zoo import ZOO_PREFIX, looks_like_hub_id

    for i, stage in enumerate(stages, 1):
        if data_ref(stage, ctx.stage_names) is None:
            getattr(stage.config, "data_files", lambda: [])()
        for field, ref in [("model", stage.config.model), *STAGES[stage.type].refs(stage.config)]:
            if ref == "instruct" and not ctx.recipe.instruct:
                raise LlamakError(f"{recipe_path}: stage {i} ({stage.type}) needs the recipe's `instruct` model, or its own `{field}:`")
            if ref and ref not in ctx.stage_names and ref not in ("base", "instruct") and not ref.startswith(ZOO_PREFIX):
                if not Path(ref).is_dir() and not looks_like_hub_id(ref):
                    raise LlamakError(f"{recipe_path}: stage {i} ({stage.type}): {field} {ref!r}: no such directory")
    for field in ("base", "instruct"):
        ref = getattr(ctx.recipe, field)
        if ref and not ref.startswith(ZOO_PREFIX) and not Path(ref).is_dir() and not looks_like_hub_id(ref):
            raise LlamakError(f"{recipe_path}: {field} {ref!r}: no such directory")


def dry_run(recipe_path: Path, override: LaunchSettings | None = None) -> list[str]:
    """Check a recipe without running anything heavy: its schema, that its inputs exist or are
    reachable (data globs, local models; hub models by their shipped or fetched config), layer maps
    and stage compatibility from configs only. Returns the lines to print; raises on the first error."""
    from llamak.planner import human, shapes

    recipe, stages = load_recipe(recipe_path)
    names = [s.name for s in stages]
    preflight(RunContext(recipe, Path("runs") / recipe.name, names), stages, recipe_path)
    lines = [f"{recipe_path}: {recipe.name}, base {recipe.base}" + (f", instruct {recipe.instruct}" if recipe.instruct else "")]
    for i, sized in enumerate(shapes(recipe, stages, str(recipe_path), override), 1):
        model = f"{sized.input} → {sized.shape.layers} layers ({human(sized.shape.total)} params)" if sized.shape else f"reads {sized.input}"
        lines.append(f"  {i:>2}. {sized.name:<12} {sized.type:<12} {model}" + "".join(f"; {n}" for n in sized.notes))
    lines.append(f"dry run OK: {len(stages)} stages; nothing was run")
    return lines


def run_recipe(
    recipe_path: Path,
    out: Path = Path("runs"),
    only: str | None = None,
    start: str | None = None,
    force: bool = False,
    sample: bool = True,
    launch: LaunchSettings | None = None,
) -> dict:
    """Run (or resume) a recipe; returns the manifest. `launch` overrides every stage's launch settings."""
    recipe, stages = load_recipe(recipe_path)
    names = [s.name for s in stages]
    for flag, value in (("--only", only), ("--from", start)):
        if value is not None and value not in names:
            raise LlamakError(f"{flag} {value}: no such stage in {recipe_path} (stages: {', '.join(names)})")
    run_dir = Path(out) / recipe.name
    ctx = RunContext(recipe, run_dir, names)
    preflight(ctx, stages, recipe_path)
    procs = Processes()
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(run_dir)
    manifest.update(recipe=str(Path(recipe_path).resolve()), name=recipe.name, order=names)
    # A stage's key for its consumers: its config hash plus when its output was made, so that a
    # stage regenerated by --only/--from also reruns everything downstream.
    keys: dict[str, str] = {}
    forced = set(names) if force else set(names[names.index(start):]) if start else set()

    for resolved in resolve_stages(recipe, stages, run_dir, launch):
        stage, input_ref, extra = resolved.stage, resolved.input, resolved.reads
        inputs = [keys.get(ref) or external_key(ctx, ref) for ref in [input_ref, *extra]]
        h = stage_hash(stage, inputs[0], inputs[1:])
        out_dir = run_dir / stage.name
        done = manifest["stages"].get(stage.name)
        up_to_date = bool(done and done["hash"] == h and out_dir.is_dir())
        if only is not None and stage.name != only:
            if names.index(stage.name) < names.index(only) and not up_to_date:
                raise LlamakError(f"--only {only}: it needs stage {stage.name!r}, which has not run with this config")
            keys[stage.name] = f"{h}:{done['finished'] if done else ''}"
            continue
        if up_to_date and stage.name not in forced and only is None:
            log.info("✓ %s: up to date (%s)", stage.name, out_dir)
            keys[stage.name] = f"{h}:{done['finished']}"
            continue
        log.info("▶ %s (%s) → %s", stage.name, stage.type, out_dir)
        model = ctx.resolve(input_ref, f"stage {stage.name}: model")
        started = time.time()
        metrics = {}
        where = resolved.launch
        with track_energy(recipe.energy_country, enabled=recipe.energy and procs.is_main) as energy:
            if where.launched and not inside_launch():
                if where.nodes > 1 and not in_slurm_allocation():
                    raise LlamakError(f"stage {stage.name}: a recipe launches on {where.nodes} nodes through Slurm (srun, e.g. "
                                      "recipes/slurm/llama-k-70b.sbatch); outside Slurm run the stage with `llamak train KIND CONFIG "
                                      "--nodes N` on every node (NODE_RANK, MASTER_ADDR, MASTER_PORT)")
                metrics = run_launched(stage.name, stage.type, launched_config(stage, where, ctx), model, out_dir, where)
            elif STAGES[stage.type].launched or procs.is_main:
                where = Launch(int(os.environ.get("WORLD_SIZE", "1")))  # in this process (or all of an outer `accelerate launch`)
                metrics = STAGES[stage.type].run(stage.config, model, out_dir, ctx)
        procs.barrier()
        finished = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
        keys[stage.name] = f"{h}:{finished}"
        manifest["stages"][stage.name] = {
            "type": stage.type,
            "hash": h,
            "input": input_ref,
            "input_path": str(model),
            "reads": extra,  # other models it reads (chat vector's base/instruct, a merge's models)
            "seconds": round(time.time() - started, 2),
            "finished": finished,
            "metrics": metrics,
            "energy": energy or None,  # the driver's share (a launched stage's processes are not metered)
            "launch": where.record() if STAGES[stage.type].launched else None,  # world size and sharding it ran with
        }
        if procs.is_main:
            write_manifest(run_dir, manifest)
            write_report_quietly(run_dir)
        procs.barrier()
    if procs.is_main:
        write_manifest(run_dir, manifest)
        write_report_quietly(run_dir)
        models = [s.name for s in stages if STAGES[s.type].makes_model]
        if sample and recipe.sample and only is None and models:
            print_samples(run_dir / models[-1], recipe.sample)
    return manifest


def train_stage(kind: str, config: BaseModel, model: Path, out: Path, override: LaunchSettings | None = None) -> dict:
    """`llamak train KIND CONFIG`: one training stage, launched like a recipe's (the CONFIG's own
    `launch:`, then NPROC_PER_NODE/NNODES, then the command line)."""
    launch = resolve_launch(config.launch, env_settings(), override)
    if launch.launched and not inside_launch():
        config = config.model_copy(update={"launch": launch.settings()})
        return run_launched(kind, kind, config, model, out, launch)
    return STAGES[kind].run(config, model, out, None)


def launched_config(stage: Stage, launch: Launch, ctx: RunContext) -> BaseModel:
    """The stage config handed to launched processes: references to models resolved to paths (the
    processes know no recipe) and the launch it runs with (part of its checkpoint fingerprint: a
    checkpoint is not resumed on a different world size or sharding)."""
    update: dict = {"launch": launch.settings()}
    for field, ref in STAGES[stage.type].refs(stage.config):
        update[field] = str(ctx.resolve(ref, f"{stage.type}.{field}"))
    return stage.config.model_copy(update=update)


def external_key(ctx: RunContext, ref: str) -> str:
    """Fingerprint of an input that is not a stage of this run (base, instruct, zoo model or path)."""
    return content_hash(ctx.resolve(ref, f"model {ref}"))


def write_report_quietly(run_dir: Path) -> None:
    """Regenerate report.html; a report failure must never fail the run."""
    try:
        from llamak.report.html import write_report

        write_report(run_dir)
    except Exception as e:  # noqa: BLE001 — the run's outputs matter more than its report
        log.warning("report not written: %s", e)


def print_samples(model_dir: Path, prompts: list[str], max_new_tokens: int = 40) -> None:
    """Greedy chat replies of the final model, so a run ends with something to look at."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    print(f"\nchat sample from {model_dir}:")
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        print(f"  user: {prompt}\n  model: {reply.strip()}")

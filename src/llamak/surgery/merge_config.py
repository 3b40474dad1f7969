"""mergekit's YAML format, read and checked up front, and its parameter rules.

```yaml
merge_method: ties                  # linear, task_arithmetic, ties, dare_linear, dare_ties, slerp, model_stock, passthrough
base_model: path/or/zoo:name
models:                             # or `slices:` (explicit layer ranges), not both
  - model: path/a
    parameters: {weight: 0.5, density: [0.3, 0.7]}       # a list = a gradient across layers
  - model: path/b
    parameters:
      weight: [{filter: self_attn, value: 0.7}, {value: 0.3}]   # per-tensor filters: first match wins
parameters: {normalize: true}
dtype: float32                      # inputs are cast to this; out_dtype (default: dtype) is written
tokenizer_source: base              # base | union | a model (vocabularies may differ: see vocab_align.py)
```

A parameter is looked up, most specific first, in the model's own `parameters` (its slice source),
the slice's, then the top-level `parameters`. A list of numbers is a gradient: layer `i` of an
`n`-layer slice reads position `i/(n−1)` of the list, linearly interpolated; embeddings and the final
norm/head read position 0. A list of `{filter, value}` picks the first whose filter is a substring of
the tensor's name (no filter or `*` matches all). Everything mergekit accepts that llamak does not
implement (other methods, `modules`, token additions, LoRA references) is refused with one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from llamak.errors import LlamakError
from llamak.surgery.merge_methods import METHODS, REQUIRED, Method, Param

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float64": torch.float64}
MERGEKIT_ONLY = ("della", "della_linear", "breadcrumbs", "breadcrumbs_ties", "nuslerp", "multislerp", "karcher",
                 "sce", "ram", "ramplus_tl", "nearswap", "arcee_fusion")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputModel(_Strict):
    model: str
    parameters: dict[str, Any] | None = None


class InputSlice(_Strict):
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] | None = None


class OutputSlice(_Strict):
    sources: list[InputSlice] = Field(min_length=1)
    base_model: str | None = None
    parameters: dict[str, Any] | None = None


class MergeConfig(_Strict):
    merge_method: str
    base_model: str | None = None
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    parameters: dict[str, Any] | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    tokenizer: dict[str, Any] | None = None  # only {source: ...} is supported
    chat_template: str | None = None  # a Jinja template string; mergekit's template names are refused

    @property
    def method(self) -> Method:
        return METHODS[self.merge_method]

    def model_refs(self) -> list[str]:
        """Every model the config names, base first, each once."""
        refs = [self.base_model] if self.base_model else []
        for m in self.models or []:
            refs.append(m.model)
        for s in self.slices or []:
            refs += [src.model for src in s.sources] + ([s.base_model] if s.base_model else [])
        return list(dict.fromkeys(refs))

    def with_models(self, rename: dict[str, str]) -> MergeConfig:
        """The same config with model references replaced (e.g. recipe stage names → paths)."""
        data = self.model_dump(exclude_none=True)
        swap = lambda ref: rename.get(ref, ref)  # noqa: E731
        if "base_model" in data:
            data["base_model"] = swap(data["base_model"])
        for m in data.get("models", []):
            m["model"] = swap(m["model"])
        for s in data.get("slices", []):
            if "base_model" in s:
                s["base_model"] = swap(s["base_model"])
            for src in s["sources"]:
                src["model"] = swap(src["model"])
        return MergeConfig.model_validate(data)


def load_merge_config(path: str | Path) -> MergeConfig:
    from llamak.recipe import read_yaml_mapping

    path = Path(path)
    raw = read_yaml_mapping(path, "merge_method and models or slices (mergekit's format)")
    return check_config(raw, f"{path}: ")


def check_config(raw: dict, where: str = "") -> MergeConfig:
    """Validate a mergekit-style mapping; every problem is one `LlamakError` line naming the field."""
    from llamak.recipe import validate

    if "modules" in raw:
        raise LlamakError(f"{where}field 'modules': per-module merges (multimodal models) are not supported; use models or slices")
    method = raw.get("merge_method")
    if method in MERGEKIT_ONLY:
        raise LlamakError(
            f"{where}field 'merge_method': {method!r} is a mergekit method llamak does not implement "
            f"(llamak: {', '.join(METHODS)}); run it with mergekit-yaml"
        )
    if method is not None and method not in METHODS:
        raise LlamakError(f"{where}field 'merge_method': unknown method {method!r} (known: {', '.join(METHODS)})")
    config = validate(MergeConfig, raw, where)
    if bool(config.models) == bool(config.slices):
        raise LlamakError(f"{where}give exactly one of 'models' or 'slices'")
    for key in ("dtype", "out_dtype"):
        value = getattr(config, key)
        if value is not None and value not in DTYPES:
            raise LlamakError(f"{where}field {key!r}: {value!r} is not a float dtype ({', '.join(DTYPES)})")
    if config.tokenizer is not None:
        if set(config.tokenizer) - {"source"}:
            raise LlamakError(
                f"{where}field 'tokenizer': only `source` is supported (token additions/permutations are not); "
                f"got {', '.join(sorted(config.tokenizer))}"
            )
        if config.tokenizer_source:
            raise LlamakError(f"{where}give either 'tokenizer' or 'tokenizer_source', not both")
        config = config.model_copy(update={"tokenizer_source": config.tokenizer.get("source"), "tokenizer": None})
    if config.chat_template is not None and "{%" not in config.chat_template and "{{" not in config.chat_template:
        raise LlamakError(f"{where}field 'chat_template': give a Jinja template string (named templates are mergekit's)")
    for ref in config.model_refs():
        if "+" in ref and not Path(ref).exists():
            raise LlamakError(f"{where}model {ref!r}: LoRA references (model+adapter) are not supported; merge the adapter first")
    if config.method.base == "required" and not config.base_model and not any(s.base_model for s in config.slices or []):
        raise LlamakError(f"{where}{config.merge_method} needs 'base_model' (the model the others are measured from)")
    for label, params in _parameter_blocks(config):
        check_parameters(config.method, params, f"{where}{label}")
    return config


def _parameter_blocks(config: MergeConfig):
    yield "parameters", config.parameters
    for i, m in enumerate(config.models or []):
        yield f"models[{i}].parameters", m.parameters
    for i, s in enumerate(config.slices or []):
        yield f"slices[{i}].parameters", s.parameters
        for j, src in enumerate(s.sources):
            yield f"slices[{i}].sources[{j}].parameters", src.parameters


def check_parameters(method: Method, params: dict | None, where: str) -> None:
    for name, setting in (params or {}).items():
        param = method.param(name)
        if param is None:
            known = ", ".join(p.name for p in method.params)
            raise LlamakError(f"{where}.{name}: not a parameter of {method.name} (its parameters: {known})")
        for value in _leaf_values(setting, f"{where}.{name}"):
            _cast(param, value, f"{where}.{name}")


def _leaf_values(setting: Any, where: str) -> list:
    """The scalar values inside a setting (scalar, gradient list, or filter list), checking its shape."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list):
        if not setting:
            raise LlamakError(f"{where}: empty list")
        if all(isinstance(e, dict) for e in setting):
            values = []
            for e in setting:
                if "value" not in e or set(e) - {"filter", "value"}:
                    raise LlamakError(f"{where}: a filtered setting is {{filter: NAME, value: V}}, got {e!r}")
                values += _leaf_values(e["value"], where)
            return values
        if any(isinstance(e, (dict, list)) for e in setting):
            raise LlamakError(f"{where}: expected a value, a list of values (a gradient), or a list of {{filter, value}}")
        return setting
    return [setting]


def _cast(param: Param, value: Any, where: str) -> Any:
    if value is None:
        if param.default is None:
            return None
        raise LlamakError(f"{where}: missing value")
    if param.kind is bool:
        if not isinstance(value, bool):
            raise LlamakError(f"{where}: expected true or false, got {value!r}")
        return value
    try:
        number = float(value)  # mergekit reads YAML strings such as "1e-3" as numbers too
    except (TypeError, ValueError):
        raise LlamakError(f"{where}: expected a number, got {value!r}") from None
    if isinstance(value, bool):
        raise LlamakError(f"{where}: expected a number, got {value!r}")
    if param.name in ("t", "density") and not 0 <= number <= 1:
        raise LlamakError(f"{where}: {param.name} must be within [0, 1], got {number}")
    return number


def evaluate(param: Param, setting: Any, tensor_name: str, t: float) -> Any:
    """A setting's value for one tensor at gradient position t (mergekit's `evaluate_setting`); None: unset here."""
    if isinstance(setting, dict):
        setting = [setting]
    if isinstance(setting, list):
        if all(isinstance(e, dict) for e in setting):
            for cond in setting:
                f = cond.get("filter")
                if f is None or f == "*" or f in tensor_name:
                    return evaluate(param, cond["value"], tensor_name, t)
            return None
        values = [_cast(param, v, param.name) for v in setting]
        if param.kind is bool:
            return values[int(t * (len(values) - 1))]
        scaled = t * (len(values) - 1)
        i0 = int(scaled)
        i1 = min(len(values) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * values[i0] + frac * values[i1]
    return _cast(param, setting, param.name)


def resolve(param: Param, scopes: list[dict | None], tensor_name: str, t: float, who: str) -> Any:
    """The first value set for `param` in `scopes` (most specific first), else its default."""
    for scope in scopes:
        if scope and param.name in scope:
            value = evaluate(param, scope[param.name], tensor_name, t)
            if value is not None:
                return value
    if param.default is REQUIRED:
        raise LlamakError(f"{who}: no value for parameter {param.name!r} on tensor {tensor_name} (set it in the model's parameters or the top-level parameters)")
    return param.default


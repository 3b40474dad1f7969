"""`llamak.json`: the lineage every llamak output carries beside its weights.

It records the stage that made the checkpoint, its arguments, its inputs (path + quick content hash),
library versions and, once a model has been expanded, the **layer map**: for every output layer
either `{"origin": "base", "source": i}` or `{"origin": "inserted", "copy_of": i}`, where `i` always
indexes the layers of the original (never expanded) base model. CPT freezing, Chat Vector, merging
and the model card read this map; nobody recomputes "which layers are new" from a stride.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Iterator

from llamak.errors import CheckpointError

LINEAGE_FILE = "llamak.json"
LINEAGE_VERSION = 1
TRACKED_LIBRARIES = ("llamak", "torch", "transformers", "safetensors", "trl", "peft", "accelerate")

LayerMap = list[dict]


def identity_layer_map(num_layers: int) -> LayerMap:
    return [{"origin": "base", "source": i} for i in range(num_layers)]


def inserted_layers(layer_map: LayerMap) -> list[int]:
    """Output indices of the inserted (LLaMA-Pro) blocks."""
    return [k for k, entry in enumerate(layer_map) if entry["origin"] == "inserted"]


def base_source(entry: dict) -> int:
    """Index in the original base model that a layer comes from (its source or what it copies)."""
    return entry["source"] if entry["origin"] == "base" else entry["copy_of"]


def validate_layer_map(layer_map: LayerMap, num_layers: int, where: str) -> None:
    if not isinstance(layer_map, list) or len(layer_map) != num_layers:
        raise CheckpointError(f"{where}: layer_map must list {num_layers} layers (config num_hidden_layers)")
    for k, entry in enumerate(layer_map):
        ok = isinstance(entry, dict) and (
            (entry.get("origin") == "base" and isinstance(entry.get("source"), int))
            or (entry.get("origin") == "inserted" and isinstance(entry.get("copy_of"), int))
        )
        if not ok:
            raise CheckpointError(
                f"{where}: layer_map[{k}] = {entry!r}; expected {{'origin': 'base', 'source': i}} "
                "or {'origin': 'inserted', 'copy_of': i}"
            )


def read_json_object(path: Path) -> dict:
    """A JSON file that must hold an object; errors name the file."""
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_lineage(model_dir: Path) -> dict | None:
    path = Path(model_dir) / LINEAGE_FILE
    return _upgrade(read_json_object(path)) if path.is_file() else None


def _upgrade(lineage: dict) -> dict:
    """Migrate older lineage files in one place (none yet: version 1 is the first)."""
    lineage.setdefault("lineage_version", LINEAGE_VERSION)
    return lineage


def write_lineage(model_dir: Path, lineage: dict) -> None:
    (Path(model_dir) / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, ensure_ascii=False) + "\n")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def content_hash(model_dir: Path, samples_per_file: int = 8, sample_bytes: int = 1 << 16) -> str:
    """A quick fingerprint of a checkpoint without re-reading all of its weights.

    Hashes config, generation config, tokenizer and chat-template files, the shard index, every
    safetensors header (names, dtypes, shapes, offsets), each file's size and `samples_per_file`
    evenly spaced 64 KiB samples of its data (plus the file's own llamak.json, whose metrics change
    with every training run). Reading a 140 GB checkpoint costs a few MB of IO.
    """
    from llamak.surgery.tensors import header_bytes, weight_files

    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and (path.suffix in (".json", ".jinja", ".model", ".txt") or path.name.startswith("tokenizer")):
            h.update(path.name.encode() + path.read_bytes())
    for path in weight_files(model_dir):
        size = path.stat().st_size
        h.update(path.name.encode() + size.to_bytes(8, "little") + header_bytes(path))
        with open(path, "rb") as f:
            for i in range(samples_per_file):
                f.seek(size * i // samples_per_file)
                h.update(f.read(sample_bytes))
    return "sha256:" + h.hexdigest()


def file_fingerprint(path: Path) -> str:
    """Content hash of a data file; size and mtime for files over 64 MB (no full read of big corpora)."""
    stat = Path(path).stat()
    if stat.st_size <= 64 * 2**20:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def make_lineage(stage: str, args: dict, inputs: dict[str, Path], layer_map: LayerMap | None, **extra) -> dict:
    """Build the lineage record of a new output. `inputs` maps a role (e.g. 'target') to a model dir."""
    return {
        "lineage_version": LINEAGE_VERSION,
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "args": args,
        "inputs": {
            role: {"path": str(Path(p).resolve()), "hash": content_hash(p), "stage": (read_lineage(p) or {}).get("stage")}
            for role, p in inputs.items()
        },
        "layer_map": layer_map,
        "versions": library_versions(),
        **extra,
    }


@contextlib.contextmanager
def atomic_output(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield `<out>.partial/` to write into; rename it to `out` only when the block succeeds.

    On any error the partial directory is removed, so nothing half-written is left looking complete.
    An existing `out` is an error unless `overwrite`, and then it is replaced only after success.
    """
    out = Path(out).absolute()
    if out.parent == out or out.is_file():
        raise CheckpointError(f"{out}: expected a new directory path for the output")
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out}: already exists (pass --overwrite to replace it)")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left over from a killed run
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        os.rename(partial, out)
        shutil.rmtree(old)
    else:
        os.rename(partial, out)

"""`llamak convert`: pickled PyTorch weights (`pytorch_model*.bin`) → safetensors, behind a flag.

Unpickling can run arbitrary code, which is why the rest of llamak refuses `.bin` checkpoints. Even
here files load with `torch.load(weights_only=True)` (tensors and plain containers only) and mmap,
and are written tensor by tensor with the streaming writer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llamak.checkpoint import copy_side_files
from llamak.errors import CheckpointError
from llamak.lineage import atomic_output, make_lineage, write_lineage
from llamak.surgery.tensors import ShardedWriter, TensorSpec


def pickled_files(model_dir: Path) -> list[Path]:
    index = model_dir / "pytorch_model.bin.index.json"
    if index.is_file():
        return [model_dir / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    files = sorted(model_dir.glob("*.bin"))
    if not files:
        raise CheckpointError(f"{model_dir}: no pytorch_model*.bin files to convert")
    return files


def convert_pickled(model_dir: Path, out: Path, max_shard_bytes: int, overwrite: bool = False) -> None:
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"{model_dir}: no config.json (not a Hugging Face model directory)")
    files = pickled_files(model_dir)
    try:
        state = {}
        for f in files:  # mmap: tensors are paged in only when written
            state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
    except Exception as e:
        raise CheckpointError(f"{model_dir}: cannot load pickled weights safely ({e})") from None
    with atomic_output(Path(out), overwrite) as tmp:
        writer = ShardedWriter(tmp, [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in state.items()], max_shard_bytes)
        for name, tensor in state.items():
            writer.write(name, tensor)
        writer.close()
        copy_side_files(model_dir, tmp)
        (tmp / "config.json").write_bytes((model_dir / "config.json").read_bytes())
        write_lineage(tmp, make_lineage("convert", {"from": "pickle"}, {}, None, source=str(model_dir.resolve())))

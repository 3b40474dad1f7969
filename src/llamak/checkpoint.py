"""A Hugging Face model directory as llamak sees it: config, lineage/layer map, weights, side files.

Nothing here loads weights; `reader()` opens them for streaming (see `surgery/tensors.py`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from llamak.errors import ArchitectureMismatch, CheckpointError
from llamak.lineage import LayerMap, identity_layer_map, read_json_object, read_lineage, validate_layer_map
from llamak.surgery.tensors import CheckpointReader

# Decoder-only families whose blocks are `model.layers.{i}` with residual `self_attn.o_proj` and
# `mlp.down_proj` outputs, so LLaMA-Pro identity blocks and per-layer arithmetic apply unchanged.
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
# Fields that must agree for two checkpoints to be combined tensor by tensor.
ARCHITECTURE_FIELDS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "head_dim")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
VOCAB_MAP_FILE = "vocab_map.json"  # written by `llamak vocab expand`; travels with the side files
NOT_COPIED = {"config.json", "model.safetensors.index.json", "llamak.json", "pytorch_model.bin.index.json"}


@dataclass
class ModelDir:
    path: Path
    config: dict
    lineage: dict | None = None
    layer_map: LayerMap = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path, role: str = "model") -> ModelDir:
        """Open and validate a model directory; `role` names it in error messages (e.g. '--base')."""
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{role} {path}: no such directory")
        if not path.is_dir():
            raise CheckpointError(f"{role} {path}: expected a model directory, got a file")
        config_path = path / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{role} {path}: no config.json (not a Hugging Face model directory)")
        config = read_json_object(config_path)
        model_type = config.get("model_type")
        if model_type not in LLAMA_FAMILY:
            raise CheckpointError(
                f"{config_path}: model_type is {model_type!r}; llamak works on Llama-family decoders "
                f"({', '.join(LLAMA_FAMILY)})"
            )
        if not isinstance(config.get("num_hidden_layers"), int):
            raise CheckpointError(f"{config_path}: num_hidden_layers missing or not an integer")
        lineage = read_lineage(path)
        layer_map = (lineage or {}).get("layer_map") or identity_layer_map(config["num_hidden_layers"])
        validate_layer_map(layer_map, config["num_hidden_layers"], str(path / "llamak.json"))
        return cls(path=path, config=config, lineage=lineage, layer_map=layer_map)

    @property
    def num_layers(self) -> int:
        return self.config["num_hidden_layers"]

    @property
    def is_expanded(self) -> bool:
        return any(e["origin"] == "inserted" for e in self.layer_map)

    @property
    def new_token_ids(self) -> range | None:
        """Ids added by a vocabulary expansion (`vocab_map.json`), or None for an original vocabulary."""
        path = self.path / VOCAB_MAP_FILE
        if not path.is_file():
            return None
        vocab_map = read_json_object(path)
        try:
            return range(int(vocab_map["first_new_id"]), int(vocab_map["first_new_id"]) + int(vocab_map["added"]))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: expected first_new_id and added (written by `llamak vocab expand`)") from None

    def reader(self) -> CheckpointReader:
        return CheckpointReader(self.path)

    def architecture(self) -> dict:
        arch = {k: self.config.get(k) for k in ARCHITECTURE_FIELDS}
        if arch["head_dim"] is None and self.config.get("num_attention_heads"):
            arch["head_dim"] = self.config["hidden_size"] // self.config["num_attention_heads"]
        return arch


def require_same_architecture(a: ModelDir, b: ModelDir, names: tuple[str, str], layers: bool = True) -> None:
    """Raise a one-line error naming the first config field on which two checkpoints differ."""
    fields = dict(a.architecture(), **({"num_hidden_layers": a.num_layers} if layers else {}))
    other = dict(b.architecture(), **({"num_hidden_layers": b.num_layers} if layers else {}))
    for key, value in fields.items():
        if value != other[key]:
            raise ArchitectureMismatch(
                f"{names[0]} and {names[1]} differ in {key} ({value} vs {other[key]}): "
                "they must be the same architecture"
            )


def copy_side_files(src: Path, dst: Path) -> None:
    """Copy tokenizer, generation config and other small top-level files; never weights or lineage."""
    for item in sorted(Path(src).iterdir()):
        if item.is_file() and item.name not in NOT_COPIED and not item.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(item, Path(dst) / item.name)


def write_config(dst: Path, config: dict) -> None:
    (Path(dst) / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

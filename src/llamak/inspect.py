"""`llamak inspect`: a checkpoint's architecture, layer map and lineage, as text a person can scan."""

from __future__ import annotations

from pathlib import Path

from llamak.checkpoint import ModelDir
from llamak.lineage import inserted_layers


def format_layer_map(layer_map: list[dict]) -> str:
    """'0 1 +1 2 3 +3': original layers by source index, inserted copies as '+i' (copy of layer i)."""
    return " ".join(str(e["source"]) if e["origin"] == "base" else f"+{e['copy_of']}" for e in layer_map)


def describe(path: Path) -> str:
    model = ModelDir.open(path)
    c = model.config
    arch = model.architecture()
    lines = [
        f"{model.path}",
        f"  {c.get('model_type')}: {model.num_layers} layers, hidden {arch['hidden_size']}, "
        f"intermediate {arch['intermediate_size']}, heads {arch['num_attention_heads']}/{arch['num_key_value_heads']} (q/kv), "
        f"vocab {c.get('vocab_size')}, tied embeddings {bool(c.get('tie_word_embeddings'))}",
    ]
    inserted = inserted_layers(model.layer_map)
    if inserted:
        lines.append(f"  layer map ({len(inserted)} inserted, shown as +i = copy of base layer i):")
        lines.append(f"    {format_layer_map(model.layer_map)}")
    else:
        lines.append("  layer map: not expanded")
    lineage = model.lineage
    if lineage:
        lines.append(f"  made by: llamak {lineage.get('stage')} ({lineage.get('created', '?')}) with {lineage.get('args')}")
        for role, info in (lineage.get("inputs") or {}).items():
            lines.append(f"    {role}: {info.get('path')} [{info.get('stage') or 'external'}] {str(info.get('hash'))[:19]}…")
        for note in lineage.get("notes") or []:
            lines.append(f"  note: {note}")
    else:
        lines.append("  no llamak.json: an external checkpoint")
    return "\n".join(lines)

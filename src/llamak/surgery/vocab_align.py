"""Merging models whose vocabularies differ: mergekit's `tokenizer_source` semantics, row by token.

The output vocabulary is the base model's (`tokenizer_source: base`, the default), a named model's,
or the union (`union`). Every input's `embed_tokens`/`lm_head` is first laid out in the output's
token order (matched by token string); a token an input lacks gets mergekit's default row — the row
of the only model that has it, else the base model's, else the mean of the models that have it
(zero if none) — and then the merge method runs as usual.

Departure from mergekit: its `union` adds every token the base lacks with `add_tokens`, i.e. as an
*added* token that is split out of the text before BPE runs — for a Korean vocabulary expansion that
would turn learned BPE tokens into literal matches. llamak's union is the one input vocabulary that
contains all the others at the same ids (what `llamak vocab expand` makes), used as it is, merges and
all; unrelated vocabularies are refused for `union` (use `base` or a model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llamak.checkpoint import ModelDir
from llamak.errors import CheckpointError, LlamakError

EMBEDDING_SUFFIXES = ("embed_tokens.weight", "lm_head.weight")


def read_vocabulary(model_dir: Path) -> dict[str, int] | None:
    """token → id of a model's `tokenizer.json` (BPE vocabulary and added tokens); None without one."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    vocab = dict((raw.get("model") or {}).get("vocab") or {})
    vocab.update({t["content"]: t["id"] for t in raw.get("added_tokens") or []})
    return vocab


@dataclass
class Alignment:
    """Output rows, and for each model the row of its own matrix that fills each output row (−1: none)."""

    source: str  # the model whose tokenizer the output takes
    rows: int
    index: dict[str, torch.Tensor]
    base: str | None

    def inputs(self, refs: list[str]) -> dict:
        """Parameters of `align_rows` for tensors passed in the order of `refs`."""
        return {"index": tuple(self.index[r] for r in refs), "base_position": refs.index(self.base) if self.base in refs else None}


def embedding_rows(model: ModelDir) -> int:
    with model.reader() as reader:
        name = next((n for n in reader.names() if n.endswith("embed_tokens.weight")), None)
        if name is None:
            raise CheckpointError(f"{model.path}: no embed_tokens weight")
        return int(reader.spec(name).shape[0])


def plan_alignment(models: dict[str, ModelDir], base: str | None, tokenizer_source: str | None, template: str) -> Alignment | None:
    """How to lay out every input's vocabulary rows in the output's, or None when all already agree."""
    vocabs = {ref: read_vocabulary(m.path) for ref, m in models.items()}
    rows = {ref: embedding_rows(m) for ref, m in models.items()}
    known = {ref: v for ref, v in vocabs.items() if v is not None}  # mergekit: no tokenizer → same as the base's
    if not known or (len(set(rows.values())) == 1 and all(v == next(iter(known.values())) for v in known.values())):
        return None  # one vocabulary (or nothing to align by: differing shapes are then reported as such)
    if tokenizer_source == "union":
        source = next((ref for ref, v in known.items() if all(all(v.get(t) == i for t, i in w.items()) for w in known.values())), None)
        if source is None:
            raise LlamakError(
                "tokenizer_source union: no input's vocabulary contains all the others at the same ids; llamak's union keeps "
                "one tokenizer whole (a vocabulary expansion and its original) — use tokenizer_source: base or a model"
            )
    else:
        source = {None: template, "base": base or template}.get(tokenizer_source, tokenizer_source)
    if source not in models:
        raise LlamakError(f"tokenizer_source {source!r}: not one of the merged models")
    if vocabs[source] is None:
        raise LlamakError(f"tokenizer_source {source!r}: the models' vocabularies differ and {source} has no tokenizer.json")
    out_rows = rows[source]
    token_of = {i: t for t, i in vocabs[source].items()}
    index = {}
    for ref in models:
        vocab = vocabs[ref] if vocabs[ref] is not None else vocabs[source]
        ids = []
        for i in range(out_rows):
            token = token_of.get(i)
            own = vocab.get(token, -1) if token is not None else (i if ref == source else -1)  # padding rows: the source's
            ids.append(own if own < rows[ref] else -1)
        index[ref] = torch.tensor(ids, dtype=torch.long)
    return Alignment(source, out_rows, index, base if base in models else None)


def align_rows(tensors: list[torch.Tensor], index: tuple[torch.Tensor, ...], base_position: int | None) -> list[torch.Tensor]:
    """Each tensor laid out in the output's rows; missing rows get mergekit's default (see module doc)."""
    present = torch.stack([idx >= 0 for idx in index])  # models × rows
    gathered = [t[idx.clamp(min=0)].float() * (idx >= 0)[:, None] for t, idx in zip(tensors, index)]
    count = present.sum(0)
    default = torch.stack(gathered).sum(0) / count.clamp(min=1)[:, None]  # the only model's row, or the mean
    if base_position is not None:
        use_base = (count > 1) & present[base_position]
        default[use_base] = gathered[base_position][use_base]
    return [torch.where(present[m][:, None], gathered[m], default).to(t.dtype) for m, t in enumerate(tensors)]


def is_vocabulary_tensor(name: str) -> bool:
    return name.endswith(EMBEDDING_SUFFIXES)

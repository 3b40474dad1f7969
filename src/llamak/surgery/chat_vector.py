"""Chat Vector (Huang et al., ACL 2024, arXiv 2310.04799): output = T + r·(I − B), streamed.

B is a base model, I its instruction-tuned sibling, T a model continually pre-trained from B (e.g. on
Korean). The vector I − B carries chat behaviour; adding it to T gives T that behaviour without SFT.

Layer-map aware (no published practice exists for expanded targets, see ALGORITHMS.md §2.4):
when T was expanded with LLaMA-Pro blocks, the vector of base layer i is added to the output layer
whose map entry is `{"origin": "base", "source": i}`; inserted blocks stay unchanged by default. With
`inserted="copy"`, an inserted block also receives the vector of the layer it copies, on every tensor
except its zero-initialised `o_proj`/`down_proj` (whose base value was 0: adding I − B there would
inject an untrained residual write).

Departures from the official code (aqweteddy/ChatVector): it streams per tensor instead of loading
three models; embeddings/lm_head of a different vocabulary are skipped with a warning (the official
code needs `--skip_embed`); tied embeddings are resolved (lm_head falls back to embed_tokens).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from llamak.checkpoint import ModelDir, copy_side_files, require_same_architecture, write_config
from llamak.errors import ArchitectureMismatch
from llamak.lineage import atomic_output, base_source, make_lineage, write_lineage
from llamak.surgery.expand import is_zero_init
from llamak.surgery.plan import Compute, Copy, PlannedTensor, execute, layer_name, split_layer_name
from llamak.surgery.tensors import DEFAULT_SHARD_BYTES, CheckpointReader

log = logging.getLogger("llamak")

EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


CHUNK_ELEMENTS = 1 << 24  # float32 work per chunk: 64 MB, whatever the tensor's size


def add_chat_vector(target: torch.Tensor, base: torch.Tensor, instruct: torch.Tensor, ratio: float) -> torch.Tensor:
    """target + ratio·(instruct − base), computed in float32, returned in the target's dtype.

    Works in chunks so that a 2 GB bf16 embedding of a 70B model needs 64 MB of float32 scratch,
    not three float32 copies of itself.
    """
    out = torch.empty_like(target)
    t, b, i, o = (x.reshape(-1) for x in (target, base, instruct, out))
    for start in range(0, t.numel(), CHUNK_ELEMENTS):
        end = start + CHUNK_ELEMENTS
        o[start:end] = (t[start:end].float() + ratio * (i[start:end].float() - b[start:end].float())).to(o.dtype)
    return out


def add_chat_vector_rows(target: torch.Tensor, base: torch.Tensor, instruct: torch.Tensor, ratio: float) -> torch.Tensor:
    """Chat vector on the first rows of an expanded-vocabulary matrix: the base vocabulary's rows get
    ratio·(instruct − base), the rows of added tokens stay as they are."""
    out = target.clone()
    rows = base.shape[0]
    out[:rows] = add_chat_vector(target[:rows], base, instruct, ratio)
    return out


def is_embedding(name: str) -> bool:
    return name in (EMBED, LM_HEAD) or name.endswith(("embed_tokens.weight", "lm_head.weight"))


def resolve(reader: CheckpointReader, name: str) -> str | None:
    """The stored name of a tensor, following tied embeddings (no lm_head stored → embed_tokens)."""
    if name in reader:
        return name
    if name.endswith(LM_HEAD) and EMBED in reader:
        return EMBED
    return None


@dataclass
class ChatVectorResult:
    out: Path
    added: int = 0
    copied: int = 0
    notes: list[str] = field(default_factory=list)


def layer_correspondence(target: ModelDir, base: ModelDir) -> dict[int, int | None]:
    """For each target layer, the base-checkpoint layer whose vector it receives (None: inserted block).

    Matching goes through the layer maps' original source indices, so it works whether or not the
    base/instruct pair was itself expanded (their inserted blocks never contribute a vector).
    """
    base_layer_of = {e["source"]: j for j, e in enumerate(base.layer_map) if e["origin"] == "base"}
    correspondence = {}
    for k, entry in enumerate(target.layer_map):
        source = base_source(entry)
        if source not in base_layer_of:
            raise ArchitectureMismatch(
                f"--target {target.path}: layer {k} maps to base layer {source}, but --base has "
                f"{len(base_layer_of)} original layers"
            )
        correspondence[k] = base_layer_of[source] if entry["origin"] == "base" else None
    return correspondence


def copied_layer(target: ModelDir, base: ModelDir, k: int) -> int:
    """Base-checkpoint index of the layer that inserted target layer k copies."""
    source = target.layer_map[k]["copy_of"]
    return next(j for j, e in enumerate(base.layer_map) if e["origin"] == "base" and e["source"] == source)


def plan_chat_vector(
    target: ModelDir,
    base: ModelDir,
    readers: dict[str, CheckpointReader],
    ratio: float,
    inserted: Literal["skip", "copy"],
    skip_embeddings: bool,
    result: ChatVectorResult,
) -> list[PlannedTensor]:
    """One planned tensor per target tensor: T + r·(I − B) where a vector applies, else a copy."""
    correspondence = layer_correspondence(target, base)
    t_reader, b_reader, i_reader = readers["target"], readers["base"], readers["instruct"]
    plan = []
    skipped_embeddings = []
    for name in t_reader.names():
        spec = t_reader.spec(name)
        source_name: str | None = name
        parsed = split_layer_name(name)
        if parsed is not None:
            prefix, k, rest = parsed
            src = correspondence[k]
            if src is None:  # an inserted block
                if inserted == "copy" and not is_zero_init(rest):
                    src = copied_layer(target, base, k)
                else:
                    source_name = None
            if source_name is not None:
                source_name = layer_name(prefix, src, rest)
        elif is_embedding(name) and skip_embeddings:
            source_name = None
        if source_name is None:
            plan.append(PlannedTensor(spec, Copy("target", name)))
            result.copied += 1
            continue
        b_name, i_name = resolve(b_reader, source_name), resolve(i_reader, source_name)
        if b_name is None or i_name is None:
            missing = "--base" if b_name is None else "--instruct"
            raise ArchitectureMismatch(f"{missing} has no tensor {source_name} (needed for target tensor {name})")
        shapes = {spec.shape, b_reader.spec(b_name).shape, i_reader.spec(i_name).shape}
        base_rows = b_reader.spec(b_name).shape[0]
        new_ids = target.new_token_ids
        if (len(shapes) == 2 and is_embedding(name) and b_reader.spec(b_name).shape == i_reader.spec(i_name).shape
                and new_ids is not None and new_ids.start >= base_rows and spec.shape[1:] == b_reader.spec(b_name).shape[1:]):
            # an expanded vocabulary (vocab_map.json): ids below base_rows are the base's tokens
            fn = add_chat_vector_rows
            result.notes.append(f"{name}: chat vector on the {base_rows:,} rows of the original vocabulary; "
                                f"{spec.shape[0] - base_rows:,} added rows kept from the target")
        elif len(shapes) > 1:
            if is_embedding(name):
                skipped_embeddings.append(name)
                plan.append(PlannedTensor(spec, Copy("target", name)))
                result.copied += 1
                continue
            raise ArchitectureMismatch(
                f"tensor {name}: shapes differ between target, base and instruct ({sorted(shapes)})"
            )
        else:
            fn = add_chat_vector
        plan.append(PlannedTensor(spec, Compute(fn, (("target", name), ("base", b_name), ("instruct", i_name)), {"ratio": ratio})))
        result.added += 1
    if skipped_embeddings:
        note = (
            f"vocabulary differs between target and base/instruct: {', '.join(skipped_embeddings)} "
            "kept from the target without the chat vector (pass --skip-embeddings to silence this)"
        )
        log.warning(note)
        result.notes.append(note)
    return plan


def chat_vector(
    base: str | Path,
    instruct: str | Path,
    target: str | Path,
    out: str | Path,
    ratio: float = 1.0,
    inserted: Literal["skip", "copy"] = "skip",
    skip_embeddings: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
) -> ChatVectorResult:
    """Write `target + ratio·(instruct − base)` into `out`, following the target's layer map."""
    b = ModelDir.open(base, role="--base")
    i = ModelDir.open(instruct, role="--instruct")
    t = ModelDir.open(target, role="--target")
    require_same_architecture(b, i, ("--base", "--instruct"))
    if b.layer_map != i.layer_map:
        raise ArchitectureMismatch("--base and --instruct have different layer maps; they must be a base/instruct pair")
    if bool(b.config.get("tie_word_embeddings")) != bool(i.config.get("tie_word_embeddings")):
        raise ArchitectureMismatch("--base and --instruct differ in tie_word_embeddings: they must be a base/instruct pair")
    require_same_architecture(t, b, ("--target", "--base"), layers=False)
    if inserted not in ("skip", "copy"):
        raise ValueError(f"inserted must be 'skip' or 'copy', got {inserted!r}")
    result = ChatVectorResult(Path(out))
    with b.reader() as br, i.reader() as ir, t.reader() as tr:
        readers = {"base": br, "instruct": ir, "target": tr}
        plan = plan_chat_vector(t, b, readers, ratio, inserted, skip_embeddings, result)
        with atomic_output(Path(out), overwrite) as tmp:
            execute(plan, readers, tmp, max_shard_bytes, workers=workers, desc="chat-vector", progress=progress)
            copy_side_files(t.path, tmp)
            if EMBED in tr and EMBED in ir and tr.spec(EMBED).shape == ir.spec(EMBED).shape:
                # Same vocabulary: the output chats like the instruct model, so it takes its chat
                # template, tokenizer settings and stop tokens (as the official code copies them).
                copy_side_files(i.path, tmp)
            write_config(tmp, t.config)
            lineage = make_lineage(
                "chat_vector",
                {"ratio": ratio, "inserted": inserted, "skip_embeddings": skip_embeddings},
                {"target": t.path, "base": b.path, "instruct": i.path},
                t.layer_map if t.is_expanded else None,
                notes=result.notes,
            )
            write_lineage(tmp, lineage)
    return result

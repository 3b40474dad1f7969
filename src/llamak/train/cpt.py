"""Continued pre-training (CPT) on raw Korean/English text, on TRL's `SFTTrainer`.

    llamak train cpt cpt.yaml            # fields below + `model:` and `out:`

Documents are packed padding-free (`packing_strategy="bfd_split"`): several documents share a row,
`position_ids` restart at each document so they do not attend to each other, and a document longer
than `seq_len` is split into pieces rather than truncated, so no text is lost. Languages are mixed
by token share (`mix`), by sampling whole documents without repetition. With `trainable: inserted`
only the blocks that the layer map marks as inserted train (LLaMA-Pro); `all` trains everything;
`lora` trains adapters (optionally only on inserted blocks) and merges them into the output.

For large corpora, tokenize and pack once with `llamak data pack` (or the recipe's `data` stage)
and give the folder as `packed:` instead of `corpus:`; the trainer then reads the Parquet shards
as they are (its tokenizer and `seq_len` must match the ones the shards were packed with).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from llamak.errors import LlamakError
from llamak.checkpoint import ModelDir
from llamak.train.common import Trainable, TrainSettings, build_config, build_model, expand_globs, load_tokenizer, read_jsonl, run_training

log = logging.getLogger("llamak")


class CptConfig(TrainSettings):
    """A CPT stage: `corpus` maps a language to file globs (.jsonl/.jsonl.gz with `text`, or .txt),
    or `packed` names a folder of `llamak data pack` shards."""

    trainable: Trainable = "inserted"
    corpus: dict[str, list[str]] | None = Field(None, min_length=1)
    packed: str | None = None
    mix: dict[str, float] | None = None  # token share per language, e.g. {ko: 0.5, en: 0.5}; default: as found
    text_field: str = "text"
    learning_rate: float = Field(2e-4, gt=0)

    @field_validator("mix")
    @classmethod
    def _shares(cls, mix):
        return check_shares(mix)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.corpus is None) == (self.packed is None):
            raise ValueError("give exactly one of `corpus` (raw text files) or `packed` (a `llamak data pack` folder)")
        if self.packed is not None and self.mix is not None:
            raise ValueError("`mix` applies to `corpus`; packed shards are mixed already (`llamak data mix`)")
        return self

    def data_files(self) -> list[Path]:
        if self.packed is not None:
            return [Path(self.packed) / "pack.json", *packed_shards(Path(self.packed))]
        return [f for lang in sorted(self.corpus) for f in expand_globs(self.corpus[lang], f"corpus.{lang}")]


def check_shares(mix: dict[str, float] | None) -> dict[str, float] | None:
    """Token shares per language (`mix:` of a cpt or data stage): positive, summing to 1."""
    if mix is not None and (any(v <= 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6):
        raise ValueError("shares must be positive and sum to 1")
    return mix


def packed_shards(folder: Path) -> list[Path]:
    if not (folder / "pack.json").is_file():
        raise LlamakError(f"packed: {folder} has no pack.json (make it with `llamak data pack`)")
    return sorted((folder / "shards").glob("*.parquet"))


def load_packed(config: CptConfig, model_dir: Path):
    """The packed shards as a `datasets.Dataset`, after checking they fit this model and seq_len."""
    from datasets import Dataset

    from llamak.data.pack import tokenizer_fingerprint

    folder = Path(config.packed)
    info = json.loads((folder / "pack.json").read_text())
    if info["tokenizer"] != tokenizer_fingerprint(model_dir):
        raise LlamakError(f"packed: {folder} was tokenized with another tokenizer ({info['model']}); pack it again with this model's")
    if info["seq_len"] > config.seq_len:
        raise LlamakError(f"packed: {folder} has rows of {info['seq_len']} tokens, longer than seq_len {config.seq_len}")
    return Dataset.from_parquet([str(f) for f in packed_shards(folder)]), {"rows": info["rows"], "tokens": info["tokens"], "packed": str(folder)}


def read_documents(files: list[Path], text_field: str = "text") -> list[str]:
    """Documents of text files: one per JSONL row (field `text_field`) or one per .txt file."""
    docs: list[str] = []
    for path in files:
        if path.suffix == ".txt":
            docs.append(path.read_text(encoding="utf-8"))
        elif path.name.endswith((".jsonl", ".jsonl.gz", ".json")):
            docs += [str(row[text_field]) for row in read_jsonl(path, text_field)]
        else:
            raise LlamakError(f"{path}: unsupported corpus file (expected .jsonl, .jsonl.gz or .txt)")
    return [d for d in docs if d.strip()]


def mix_by_tokens(docs: dict[str, list[str]], tokens: dict[str, list[int]], mix: dict[str, float] | None, seed: int) -> tuple[list[str], dict]:
    """Choose whole documents so each language's token share matches `mix`, without repeating any.

    The same rule as `llamak data mix` (`choose_by_draw`): the scarcest language (relative to its
    share) is used in full, the others are taken in a seeded random order up to their token budget,
    skipping a document that would overshoot it by more than 1 %. Returns the shuffled documents and
    a report of the token counts and shares achieved.
    """
    from llamak.data.mix import choose_by_draw

    available = {lang: sum(counts) for lang, counts in tokens.items()}
    if mix is None:
        mix = {lang: n / sum(available.values()) for lang, n in available.items()}
    missing = sorted(set(mix) - set(docs))
    if missing:
        raise LlamakError(f"mix names {missing[0]!r}, which is not in corpus ({', '.join(sorted(docs))})")
    rng = random.Random(seed)
    draws = {lang: [(rng.random(), n) for n in tokens[lang]] for lang in mix}
    rule = choose_by_draw(draws, mix)
    chosen: list[str] = []
    used: dict[str, int] = {}
    for lang in mix:
        threshold, skipped = rule[lang]
        picked = [(doc, n) for doc, (draw, n) in zip(docs[lang], draws[lang]) if draw < threshold and draw not in skipped]
        chosen += [doc for doc, _ in picked]
        used[lang] = sum(n for _, n in picked)
    rng.shuffle(chosen)
    all_used = sum(used.values())
    report = {"tokens": used, "share": {lang: round(n / all_used, 4) for lang, n in used.items()}, "documents": len(chosen)}
    return chosen, report


def build_corpus(config: CptConfig, tokenizer) -> tuple[list[str], dict]:
    docs = {lang: read_documents(expand_globs(globs, f"corpus.{lang}"), config.text_field) for lang, globs in config.corpus.items()}
    empty = [lang for lang, d in docs.items() if not d]
    if empty:
        raise LlamakError(f"corpus.{empty[0]}: the files hold no text")
    tokens = {lang: [len(ids) for ids in tokenizer(d, add_special_tokens=False)["input_ids"]] for lang, d in docs.items()}
    return mix_by_tokens(docs, tokens, config.mix, config.seed)


def make_trainer(config: CptConfig, model_dir: Path, checkpoints: Path):
    """The `SFTTrainer` for a CPT stage (also used by tests to inspect real batches)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    source, tokenizer = ModelDir.open(model_dir), load_tokenizer(model_dir)
    if config.packed is not None:
        dataset, mix_report = load_packed(config, model_dir)
        log.info("cpt corpus: %d packed rows, %d tokens from %s", mix_report["rows"], mix_report["tokens"], config.packed)
        # rows are ready: no tokenizing or packing again; seq_lengths give the document boundaries
        # (max_length=None: TRL's way of saying "rows are already no longer than seq_len", checked above)
        packing = dict(packing=False, padding_free=True, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    else:
        texts, mix_report = build_corpus(config, tokenizer)
        log.info("cpt corpus: %d documents, tokens %s, shares %s", mix_report["documents"], mix_report["tokens"], mix_report["share"])
        dataset = Dataset.from_dict({"text": texts})
        packing = dict(packing=True, packing_strategy="bfd_split", dataset_text_field="text", max_length=config.seq_len)  # split long documents, never truncate
    args = build_config(SFTConfig, config, checkpoints, source, **packing)
    model, params = build_model(source, args, config.trainable, config)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    return trainer, tokenizer, source, {**params, "corpus": mix_report}


def run_cpt(config: CptConfig, model_dir: Path, out: Path) -> dict:
    """Run a CPT stage from `model_dir` into `out`; resumes from `OUT.checkpoints/` when it can."""
    return run_training("cpt", make_trainer, config, model_dir, out)

"""Continued pre-training (CPT) on raw Korean/English text, on TRL's `SFTTrainer`.

    llamak train cpt cpt.yaml            # fields below + `model:` and `out:`

Documents are packed padding-free (`packing_strategy="bfd_split"`): several documents share a row,
`position_ids` restart at each document so they do not attend to each other, and a document longer
than `seq_len` is split into pieces rather than truncated, so no text is lost. Languages are mixed
by token share (`mix`), by sampling whole documents without repetition. With `trainable: inserted`
only the blocks that the layer map marks as inserted train (LLaMA-Pro); `all` trains everything;
`lora` trains adapters (optionally only on inserted blocks) and merges them into the output.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from llamak.errors import LlamakError
from llamak.train.common import TrainSettings, build_config, expand_globs, load_for_training, prepare_trainable, read_jsonl, run_training

log = logging.getLogger("llamak")


class CptConfig(TrainSettings):
    """A CPT stage. `corpus` maps a language to file globs (.jsonl/.jsonl.gz with `text`, or .txt)."""

    trainable: Literal["inserted", "all", "lora"] = "inserted"
    corpus: dict[str, list[str]] = Field(min_length=1)
    mix: dict[str, float] | None = None  # token share per language, e.g. {ko: 0.5, en: 0.5}; default: as found
    text_field: str = "text"
    learning_rate: float = Field(2e-4, gt=0)

    @field_validator("mix")
    @classmethod
    def _shares(cls, mix):
        if mix is not None and (any(v <= 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6):
            raise ValueError("shares must be positive and sum to 1")
        return mix

    def data_files(self) -> list[Path]:
        return [f for lang in sorted(self.corpus) for f in expand_globs(self.corpus[lang], f"corpus.{lang}")]


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

    The scarcest language (relative to its share) is used in full; the others are subsampled to
    match: documents are taken in a seeded random order, skipping any that would overshoot the
    language's token budget by more than 1 % (one huge document must not take a language's whole
    budget). Returns the shuffled documents and a report of the token counts and shares achieved.
    """
    available = {lang: sum(counts) for lang, counts in tokens.items()}
    if mix is None:
        mix = {lang: n / sum(available.values()) for lang, n in available.items()}
    missing = sorted(set(mix) - set(docs))
    if missing:
        raise LlamakError(f"mix names {missing[0]!r}, which is not in corpus ({', '.join(sorted(docs))})")
    total = min(available[lang] / share for lang, share in mix.items())
    rng = random.Random(seed)
    chosen: list[str] = []
    used: dict[str, int] = {}
    for lang, share in mix.items():
        budget, order = share * total, list(range(len(docs[lang])))
        rng.shuffle(order)
        used[lang] = 0
        for i in order:
            if used[lang] + tokens[lang][i] <= budget * 1.01:
                chosen.append(docs[lang][i])
                used[lang] += tokens[lang][i]
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

    model, tokenizer, source = load_for_training(model_dir)
    texts, mix_report = build_corpus(config, tokenizer)
    log.info("cpt corpus: %d documents, tokens %s, shares %s", mix_report["documents"], mix_report["tokens"], mix_report["share"])
    model, params = prepare_trainable(model, config.trainable, config, source.layer_map)
    args = build_config(
        SFTConfig,
        config,
        checkpoints,
        max_length=config.seq_len,
        packing=True,
        packing_strategy="bfd_split",  # split long documents instead of truncating them
        dataset_text_field="text",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_dict({"text": texts}), processing_class=tokenizer)
    return trainer, tokenizer, source, {**params, "corpus": mix_report}


def run_cpt(config: CptConfig, model_dir: Path, out: Path) -> dict:
    """Run a CPT stage from `model_dir` into `out`; resumes from `OUT.checkpoints/` when it can."""
    return run_training("cpt", make_trainer, config, model_dir, out)

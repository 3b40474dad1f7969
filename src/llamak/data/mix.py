"""`llamak data mix`: a Korean/English mixture with the token shares you ask for.

    llamak data mix runs/clean/documents --model zoo:tiny-base --ratio ko=0.5,en=0.5 --out runs/mix

Shares are of tokens (the model's tokenizer), not documents: a Korean document is often several
times longer in tokens than an English one of the same length in characters. Two datatrove stages
(so it runs on any executor and any corpus size):

    count   tokens per document (kept as `tokens`); a small side file per task lists
            (language, draw, tokens) for every document
    sample  documents are taken in the order of their draw until each language's token budget is
            met: the scarcest language (relative to its share) is kept whole, the others cut at a
            per-language draw threshold computed from the side files

The draw is a hash of (seed, document id), so the result does not depend on workers or order.
Upsampling (repeating a language) is not done: ask for fewer tokens instead (`--tokens`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from llamak.errors import LlamakError


def parse_ratio(text: str) -> dict[str, float]:
    """'ko=0.5,en=0.5' (or ko=1,en=1: normalised) → {'ko': 0.5, 'en': 0.5}."""
    try:
        pairs = [part.split("=") for part in text.replace(" ", "").split(",") if part]
        ratio = {lang: float(value) for lang, value in pairs}
    except ValueError:
        raise LlamakError(f"--ratio {text!r}: expected LANG=SHARE pairs, e.g. ko=0.5,en=0.5") from None
    if not ratio or any(v <= 0 for v in ratio.values()):
        raise LlamakError(f"--ratio {text!r}: shares must be positive")
    total = sum(ratio.values())
    return {lang: v / total for lang, v in ratio.items()}


def choose_by_draw(draws: dict[str, list[tuple[float, int]]], ratio: dict[str, float], max_tokens: int | None = None) -> dict[str, tuple[float, set[float]]]:
    """Per language, (threshold, skipped): keep a document when its draw < threshold and is not in
    `skipped`, so that the kept tokens match the language's share.

    `draws[lang]` lists (draw, tokens) per document. The budget is set by the scarcest language
    (relative to its share), optionally capped at `max_tokens` in all. Documents are taken in draw
    order; one that would overshoot the budget by more than 1 % is skipped (a huge document must not
    take a language's whole budget), so `skipped` holds only such large documents.
    """
    available = {lang: sum(n for _, n in d) for lang, d in draws.items()}
    missing = [lang for lang in ratio if not available.get(lang)]
    if missing:
        raise LlamakError(f"--ratio names {missing[0]!r}, but the input has no {missing[0]} documents (found: {', '.join(sorted(available)) or 'none'})")
    total = min(available[lang] / share for lang, share in ratio.items())
    if max_tokens:
        total = min(total, max_tokens)
    chosen = {}
    for lang, share in ratio.items():
        budget, used, threshold, skipped = share * total, 0, 1.0, set()
        for draw, n in sorted(draws[lang]):
            if used >= budget * 0.999:
                threshold = draw
                break
            if used + n > budget * 1.01:
                skipped.add(draw)
            else:
                used += n
        chosen[lang] = (threshold, skipped)
    return chosen


def uniform(seed: int, doc_id: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


class TokenizerStep(PipelineStep):
    """Loads the model's tokenizer once per worker (tokenizers are not worth pickling)."""

    def __init__(self, tokenizer_dir: str):
        super().__init__()
        self.tokenizer_dir = tokenizer_dir
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        return self._tokenizer


class CountTokens(TokenizerStep):
    name = "🔢 count tokens"

    def __init__(self, tokenizer_dir: str, draws_folder: str, seed: int = 0):
        super().__init__(tokenizer_dir)
        self.draws_folder, self.seed = draws_folder, seed

    def run(self, data, rank: int = 0, world_size: int = 1):
        from datatrove.io import get_datafolder

        from llamak.data.steps import detect_language

        with get_datafolder(self.draws_folder).open(f"{rank:05d}.tsv", "w") as draws:
            for doc in data:
                with self.track_time():
                    lang = doc.metadata.get("language") or detect_language(doc.text)
                    doc.metadata["language"] = lang
                    doc.metadata["tokens"] = n = len(self.tokenizer(doc.text, add_special_tokens=False)["input_ids"])
                    draws.write(f"{lang}\t{uniform(self.seed, doc.id)!r}\t{n}\n")
                    self.stat_update(f"tokens_{lang}", value=n)
                yield doc


def read_draws(folder: Path) -> dict[str, list[tuple[float, int]]]:
    draws: dict[str, list[tuple[float, int]]] = {}
    for f in sorted(folder.glob("*.tsv")):
        for line in f.read_text().splitlines():
            lang, draw, n = line.split("\t")
            draws.setdefault(lang, []).append((float(draw), int(n)))
    return draws


class SampleByLanguage(BaseFilter):
    name = "🎲 sample by language"

    def __init__(self, chosen: dict[str, tuple[float, set[float]]], seed: int = 0):
        super().__init__()
        self.chosen, self.seed = chosen, seed

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang = doc.metadata.get("language")
        if lang not in self.chosen:
            return False, f"not_in_ratio_{lang}"
        threshold, skipped = self.chosen[lang]
        draw = uniform(self.seed, doc.id)
        if draw >= threshold or draw in skipped:
            return False, f"sampled_out_{lang}"
        self.stat_update(f"kept_tokens_{lang}", value=doc.metadata.get("tokens", 0))
        return True


def mix(inputs: list[str], tokenizer_dir: Path, out: Path, ratio: dict[str, float], seed: int = 0, max_tokens: int | None = None, workers: int = 1, progress=None) -> dict:
    """Run both stages; writes OUT/documents/ and OUT/mix.json (tokens and shares achieved)."""
    from llamak.data.clean import ExecutorOptions, Stages, input_files, step_stats, summarise

    files = input_files(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, None, ExecutorOptions(workers=workers))
    stages.add("count", [stages.corpus_reader(files), CountTokens(str(tokenizer_dir), str(out / "work" / "draws"), seed), stages.writer(out / "work" / "counted")], len(files))
    stages.run(progress)
    draws = read_draws(out / "work" / "draws")
    chosen = choose_by_draw(draws, ratio, max_tokens)

    stages.runs, stages.names = [], []
    stages.add("sample", [stages.reader(out / "work" / "counted"), SampleByLanguage(chosen, seed), stages.writer(out / "documents")], len(files))
    stages.run(progress)
    sampled = step_stats(summarise(out, ["sample"]), "sample", "sample by language")
    kept = {k.removeprefix("kept_tokens_"): v for k, v in sampled.items() if k.startswith("kept_tokens_")}
    total = sum(kept.values()) or 1
    report = {
        "ratio": ratio,
        "available_tokens": {lang: sum(n for _, n in d) for lang, d in draws.items()},
        "tokens": kept,
        "share": {lang: round(n / total, 4) for lang, n in kept.items()},
        "documents": sampled.get("forwarded", 0),
        "seed": seed,
    }
    (out / "mix.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report

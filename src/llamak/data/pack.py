"""`llamak data pack`: tokenize once, in parallel, into packed shards the CPT stage trains on.

    llamak data pack runs/mix/documents --model zoo:tiny-base --seq-len 256 --out runs/packed

Each datatrove task tokenizes its files with the model's tokenizer (BOS from the tokenizer, EOS
appended, as the CPT stage does for raw text) and packs documents padding-free with TRL's
`pack_dataset(strategy="bfd_split")`: best-fit-decreasing rows of at most `seq_len` tokens, long
documents split rather than truncated. Rows are written as Parquet shards
(`input_ids`, `seq_lengths`: the document lengths in the row, from which the trainer rebuilds
`position_ids` so documents do not attend to each other). `pack.json` records the tokenizer's
fingerprint and `seq_len`; CPT checks both before training on the shards.
"""

from __future__ import annotations

import json
from pathlib import Path

from llamak.data.mix import TokenizerStep
from llamak.errors import LlamakError

SHARD_TOKENS = 50_000_000  # a task flushes a shard every ~50M tokens (~400 MB as int64 in memory)


def tokenizer_fingerprint(model_dir: Path) -> str:
    """Hash of the tokenizer: packed shards are only valid for the tokenizer that made them.

    The hash is of `tokenizers`' own serialisation of the loaded tokenizer, not of the file's bytes:
    a training stage saves the same tokenizer again through transformers, in other bytes."""
    import hashlib

    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise LlamakError(f"{model_dir}: has no tokenizer.json (packing needs a fast tokenizer)")
    return hashlib.sha256(Tokenizer.from_file(str(path)).to_str().encode()).hexdigest()


class PackShards(TokenizerStep):
    """Tokenize → pack (bfd_split) → `OUT/{rank:05d}-{part:03d}.parquet`."""

    name = "📦 tokenize and pack"

    def __init__(self, tokenizer_dir: str, out: str, seq_len: int, batch: int = 256, shard_tokens: int = SHARD_TOKENS):
        super().__init__(tokenizer_dir)
        self.out, self.seq_len, self.batch, self.shard_tokens = out, seq_len, batch, shard_tokens

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        eos = self.tokenizer.eos_token_id
        return [ids + [eos] for ids in self.tokenizer(texts)["input_ids"]]

    def flush(self, rank: int, part: int, sequences: list[list[int]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datasets import Dataset
        from datasets.utils.logging import disable_progress_bar
        from trl.data_utils import pack_dataset

        disable_progress_bar()  # one bar per shard from each worker is noise
        packed = pack_dataset(Dataset.from_dict({"input_ids": sequences}), self.seq_len, strategy="bfd_split")
        table = pa.table({"input_ids": packed["input_ids"], "seq_lengths": packed["seq_lengths"]})
        Path(self.out).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, Path(self.out) / f"{rank:05d}-{part:03d}.parquet")
        self.stat_update("rows", value=len(table))

    def run(self, data, rank: int = 0, world_size: int = 1) -> None:  # the last step: consumes the documents
        sequences, texts, tokens, part = [], [], 0, 0
        for doc in data:
            texts.append(doc.text)
            if len(texts) == self.batch:
                with self.track_time():
                    new = self.tokenize(texts)
                sequences += new
                tokens += sum(map(len, new))
                texts = []
            if tokens >= self.shard_tokens:
                self.flush(rank, part, sequences)
                sequences, tokens, part = [], 0, part + 1
        if texts:
            sequences += self.tokenize(texts)
        if sequences:
            self.flush(rank, part, sequences)


def pack(inputs: list[str], model_dir: Path, out: Path, seq_len: int, workers: int = 1, model_ref: str | None = None, progress=None) -> dict:
    """Tokenize and pack `inputs` into `out`; returns (and writes) `pack.json`."""
    import pyarrow.parquet as pq

    from llamak.data.clean import ExecutorOptions, Stages, input_files

    if seq_len < 8:
        raise LlamakError(f"--seq-len {seq_len}: expected at least 8 tokens")
    files = input_files(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out, None, ExecutorOptions(workers=workers))
    stages.add("pack", [stages.corpus_reader(files), PackShards(str(model_dir), str(out / "shards"), seq_len)], len(files))
    stages.run(progress)
    shards = sorted((out / "shards").glob("*.parquet"))
    if not shards:
        raise LlamakError(f"{', '.join(inputs)}: no documents to pack")
    rows = tokens = 0
    for shard in shards:
        lengths = pq.read_table(shard, columns=["seq_lengths"])["seq_lengths"].to_pylist()
        rows += len(lengths)
        tokens += sum(map(sum, lengths))
    info = {
        "seq_len": seq_len,
        "tokenizer": tokenizer_fingerprint(Path(model_dir)),
        "model": model_ref or str(model_dir),
        "rows": rows,
        "tokens": tokens,
        "fill": round(tokens / (rows * seq_len), 4),
        "shards": [s.name for s in shards],
    }
    (out / "pack.json").write_text(json.dumps(info, indent=2) + "\n")
    return info

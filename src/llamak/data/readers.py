"""Reading raw corpora: JSONL, JSONL.gz, Parquet and plain text, with bad input set aside, not lost.

A web crawl always has some broken rows. Each one is counted in the stats (`rejected_<reason>`)
and written, with its file and line, to an exclusion folder, so a user can see exactly what was
skipped and why — the run never stops on it:

    invalid_utf8    a line (or .txt file) that is not UTF-8
    malformed_json  a JSONL line that does not parse to an object
    missing_text    a row without a non-empty string in the text field
    empty_file      a file with no documents at all

Documents keep their `id` (or get `FILE:LINE`) and all other fields.
"""

from __future__ import annotations

import json

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.readers.base import BaseDiskReader

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")


class CorpusReader(BaseDiskReader):
    """Reads JSONL(.gz), Parquet (row groups streamed) and .txt (one document per file)."""

    name = "📚 corpus"

    def __init__(self, data_folder, paths_file=None, rejected_writer=None, text_key: str = "text", **kwargs):
        super().__init__(data_folder, paths_file=paths_file, text_key=text_key, add_file_path=False, **kwargs)
        self.rejected_writer = rejected_writer
        self._rejected = None
        self._rank = 0

    def reject(self, path: str, line: int | None, reason: str, raw: str = "") -> None:
        self.stat_update(f"rejected_{reason}")
        if self._rejected is not None:
            where = f"{path}:{line}" if line else path
            self._rejected.write(Document(text=raw, id=where, metadata={"file": path, "line": line, "reason": reason}), self._rank)

    def document(self, row, path: str, line: int) -> Document | None:
        if not isinstance(row, dict):
            self.reject(path, line, "malformed_json", json.dumps(row, ensure_ascii=False)[:1000])
            return None
        text = row.get(self.text_key)
        if not isinstance(text, str) or not text.strip():
            self.reject(path, line, "missing_text", json.dumps(row, ensure_ascii=False, default=str)[:1000])
            return None
        row = dict(row)
        metadata = row.pop("metadata", None)
        fields = {k: v for k, v in row.items() if k not in (self.text_key, self.id_key)}
        if isinstance(metadata, dict):
            fields = metadata | fields
        elif metadata is not None:
            fields["metadata"] = metadata
        return Document(text=row[self.text_key], id=str(row.get(self.id_key) or f"{path}:{line}"), metadata=fields)

    def read_file(self, filepath: str) -> DocumentsPipeline:
        path = "/" + filepath.lstrip("/") if self.data_folder.path == "/" else filepath
        count = 0
        if filepath.endswith(".parquet"):
            rows = self._parquet_rows(filepath)
        elif filepath.endswith(".txt"):
            rows = self._text_file(filepath, path)
        else:
            rows = self._jsonl_rows(filepath, path)
        for line, row in rows:
            doc = self.document(row, path, line)
            if doc is not None:
                count += 1
                yield doc
        if count == 0:
            self.reject(path, None, "empty_file")

    def _jsonl_rows(self, filepath: str, path: str):
        with self.data_folder.open(filepath, "rb", compression="infer") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.reject(path, line_no, "invalid_utf8", raw.decode("utf-8", "replace")[:1000])
                    continue
                try:
                    row = json.loads(text)
                except ValueError:
                    self.reject(path, line_no, "malformed_json", text[:1000])
                    continue
                yield line_no, row

    def _parquet_rows(self, filepath: str):
        import pyarrow.parquet as pq

        with self.data_folder.open(filepath, "rb") as f:
            row_no = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    row_no += 1
                    yield row_no, row

    def _text_file(self, filepath: str, path: str):
        with self.data_folder.open(filepath, "rb") as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.reject(path, raw[: e.start].count(b"\n") + 1, "invalid_utf8", raw.decode("utf-8", "replace")[:1000])
            return
        yield 1, {self.text_key: text, self.id_key: path}

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._rank = rank
        if self.rejected_writer is None:
            yield from super().run(data, rank, world_size)
            return
        with self.rejected_writer as writer:
            self._rejected = writer
            yield from super().run(data, rank, world_size)


class StageReader(JsonlReader):
    """Reads an earlier stage's JSONL output; a stage that kept no documents wrote no file, which is fine."""

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.data_folder.list_files(glob_pattern=self.glob_pattern):
            yield from super().run(data, rank, world_size)

"""Input files: globs and JSONL rows, with one-line errors naming the file and line.

A leaf module (standard library only): the data pipeline, the zoo and the training stages read
their inputs through it without importing torch.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from llamak.errors import LlamakError


def expand_globs(patterns: list[str], what: str) -> list[Path]:
    """Files matching each pattern (relative to the working directory); a pattern matching nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matched:
            raise LlamakError(f"{what}: {pattern!r} matches no file (paths are relative to {Path.cwd()})")
        files += matched
    return files


def read_jsonl(path: Path, required: str) -> list[dict]:
    """Rows of a JSONL (or .jsonl.gz) file; a malformed line is an error naming file, line and field."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise LlamakError(f"{path}:{number}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or required not in row:
                raise LlamakError(f"{path}:{number}: expected an object with a {required!r} field")
            rows.append(row)
    return rows


def read_labelled(path: Path, text: str, label: str, keep: tuple[str, ...] = ()) -> list[dict]:
    """Rows {text: str, label: bool, *keep} of a labelled JSONL file (classifier training and
    evaluation sets); a bad row is a one-line error naming the file and line, an empty file too."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LlamakError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({text: str(row[text]), label: bool(row[label]), **{k: row[k] for k in keep if row.get(k) is not None}})
        except (ValueError, KeyError, TypeError) as e:
            raise LlamakError(f"{path}:{number}: expected a JSON object with {text!r} and {label!r} ({e})") from None
    if not rows:
        raise LlamakError(f"{path}: no rows")
    return rows


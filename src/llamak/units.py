"""Parsing human-readable sizes (`--shard-size 5GB`), without importing torch."""

from __future__ import annotations

import re

from llamak.errors import LlamakError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str, flag: str = "--shard-size") -> int:
    """'5GB' → 5_000_000_000 (decimal units as in transformers' max_shard_size; KiB/MiB/GiB binary)."""
    m = _SIZE.match(text)
    unit = (m.group(2) or "").upper() if m else None
    if unit is not None and unit and not unit.endswith("B"):
        unit += "B"
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise LlamakError(f"{flag} {text!r}: expected a size such as 5GB, 500MB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[unit])


_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)


def parse_count(text: str, flag: str) -> int:
    """'2B' → 2_000_000_000, '500M', '10k' or a plain number (token counts)."""
    m = _COUNT.match(text)
    if not m or float(m.group(1)) <= 0:
        raise LlamakError(f"{flag} {text!r}: expected a count such as 2B, 500M, 10K or a number")
    return int(float(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[m.group(2).upper()])

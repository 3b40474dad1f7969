"""MinHash shingles for Korean and English alike: hashed character n-grams, computed with numpy.

datatrove's `MinhashDedupSignature` hashes word n-grams one by one in Python, after a simplification
pass in Python, and its word splitter for a language loads spaCy (English) or Kiwi (Korean) — slow,
and wrong for a mixed stream. Character n-grams need no word splitter (a Korean eojeol glues
particles to words, so word n-grams miss near-duplicates that differ by one ending) and hash as one
array operation. A fixed quarter of the shingle hashes is kept (those ≡ 0 mod 4: the same shingles
in every document, so the Jaccard estimate is unbiased) — 4× less work for the signature. The rest
— signatures, buckets, clusters, removal — is datatrove's.
"""

from __future__ import annotations

import string
import unicodedata

import numpy as np
from datatrove.pipeline.dedup import MinhashDedupSignature

CHARACTERS_PER_SHINGLE = 6  # ~2 Korean eojeols, ~1 English word: one changed word touches few shingles
SAMPLE = 4  # keep shingle hashes ≡ 0 (mod SAMPLE)
_MULTIPLIER = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: spreads code points over 64 bits
_POWERS = _MULTIPLIER ** np.arange(CHARACTERS_PER_SHINGLE - 1, -1, -1, dtype=np.uint64)  # wraps mod 2^64
# punctuation (ASCII and the common CJK/typographic marks) becomes a space; every digit becomes 0
_SIMPLIFY = str.maketrans({**{c: " " for c in string.punctuation + "·…“”‘’「」『』【】《》〈〉、。，！？：；～"}, **{c: "0" for c in string.digits}})


def simplify(text: str) -> str:
    """Lower case, NFC, punctuation removed, digits as 0, whitespace collapsed (datatrove's idea, in C calls)."""
    return " ".join(unicodedata.normalize("NFC", text).lower().translate(_SIMPLIFY).split())


def character_shingles(text: str, n: int = CHARACTERS_PER_SHINGLE) -> np.ndarray:
    """64-bit hashes of the n-character windows of `text` that fall in the sample, shape (k, 1)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < n:
        return np.empty((0, 1), dtype=np.uint64)
    powers = _POWERS if n == CHARACTERS_PER_SHINGLE else _MULTIPLIER ** np.arange(n - 1, -1, -1, dtype=np.uint64)
    hashes = np.lib.stride_tricks.sliding_window_view(codes, n) @ powers  # polynomial hash, mod 2^64
    hashes ^= hashes >> np.uint64(29)  # mix the high bits down (the signature step works mod a 61-bit prime)
    return hashes[hashes % np.uint64(SAMPLE) == 0].reshape((-1, 1))


class CharacterMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature step over sampled character n-gram shingles."""

    def get_shingles(self, text: str) -> np.ndarray:
        return character_shingles(simplify(text))

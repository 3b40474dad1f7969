"""One Kiwi morpheme analyser per process, shared by the quality filter and the profanity filter.

Kiwi (kiwipiepy) loads a ~100 MB model, so each worker builds it once, lazily (it cannot be
pickled to workers). `model_type="cong"` is the model kiwipiepy ships; datatrove's own Kiwi
tokenizer asks for one that newer kiwipiepy no longer has. The last few analyses are cached: the
quality filter and the profanity filter usually see the same text (PII masking rarely changes it).
"""

from __future__ import annotations

import functools
import re

from datatrove.utils.word_tokenizers import WordTokenizer


@functools.cache
def kiwi():
    from kiwipiepy import Kiwi

    return Kiwi(model_type="cong", num_workers=1)


@functools.lru_cache(maxsize=4)
def morphemes(text: str) -> tuple:
    return tuple(kiwi().tokenize(text))


class KoreanWords(WordTokenizer):
    """datatrove word tokenizer for Korean: Kiwi morphemes (what Gopher/FineWeb filters count as words)."""

    _long_number = re.compile(r"[0-9,]{20,}")  # Kiwi is slow on very long digit runs

    def word_tokenize(self, text: str) -> list[str]:
        text = self._long_number.sub("", text)
        return [text[t.start : t.end] for t in morphemes(text)]

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.text for s in kiwi().split_into_sents(text)]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(s.start, s.end) for s in kiwi().split_into_sents(text)]

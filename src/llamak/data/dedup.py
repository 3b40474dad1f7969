"""What MinHash deduplication sees as words, for Korean and English alike.

datatrove's MinHash signatures are built from n-grams of words, and its default word splitter
for a language loads spaCy (English) or Kiwi (Korean) — slow, and wrong for a mixed stream. For
near-duplicate detection, runs of letters and digits are enough in both languages (a Korean
eojeol stays one word), cost nothing to load, and behave the same in every worker.
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

_WORD = re.compile(r"\w+")
_SENTENCE = re.compile(r"[^.!?。\n]+[.!?。]*")


class ScriptWords(WordTokenizer):
    def word_tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [m.group().strip() for m in _SENTENCE.finditer(text) if m.group().strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in _SENTENCE.finditer(text) if m.group().strip()]

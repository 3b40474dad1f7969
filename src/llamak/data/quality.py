"""Gopher and FineWeb quality rules computed in one pass from regular-expression words.

datatrove's `GopherQualityFilter` and `FineWebQualityFilter` are the reference (same rules, same
thresholds, same drop reasons); they split words with spaCy (English) or Kiwi (Korean) and walk
every character of every word in Python: ~14 ms per 1,000-character document, most of a clean
run. Here a word is a run of letters/digits (`\\w+`) or one punctuation mark, which is what the
rules count, and the statistics come from string methods: ~0.1 ms.

For Korean a word is an eojeol (a space-separated word with its particles attached), not a Kiwi
morpheme, so the Korean thresholds are in eojeols: an eojeol is about two morphemes, and a particle
or ending at its end stands for the stop words Gopher counts (이, 가, 은, 는, 을, 를, 다, …).
`tests/test_data_clean.py` checks that the verdicts equal datatrove's own filters on English
(same words) and the Kiwi-based ones on the bundled Korean corpora.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.utils.text import TERMINAL_PUNCTUATION

_WORDS = re.compile(r"(\w+)|[^\w\s]")  # group 1: a word; otherwise one punctuation mark (a "symbol word")


@dataclass(frozen=True)
class QualityRules:
    """Gopher (arXiv 2112.11446) and FineWeb line rules, with datatrove's English defaults."""

    min_doc_words: int = 50
    max_doc_words: int = 100_000
    min_avg_word_length: float = 3
    max_avg_word_length: float = 10
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8  # datatrove's `max_non_alpha_words_ratio` (a minimum, despite its name)
    min_stop_words: int = 2
    stop_words: frozenset = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
    line_punct_thr: float = 0.12
    stop_chars: tuple = tuple(TERMINAL_PUNCTUATION)
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    stop_word_endings: bool = False  # Korean: a stop word is a particle/ending at the end of an eojeol


ENGLISH = QualityRules()
# Korean, in eojeols: 25 eojeols ≈ the 50 morphemes Gopher asks for; 1–12 characters per eojeol; a
# line says in ~15 characters what English says in ~30; stop words are the commonest particles and
# endings; lists are judged per eojeol (two morphemes), so their newline limit doubles.
KOREAN = QualityRules(
    min_doc_words=25, min_avg_word_length=1, max_avg_word_length=12, min_alpha_words_ratio=0.7, min_stop_words=3,
    stop_words=frozenset({"이", "가", "은", "는", "을", "를", "의", "에", "에서", "도", "와", "과", "로", "으로", "다", "고", "것", "수"}),
    stop_chars=(".", "!", "?", "…", "다", "요", ")", '"', "'", "。", ":", ";"), short_line_length=15, new_line_ratio=0.6,
    stop_word_endings=True,
)


# Korean stop words counted as Gopher does with morphemes: an ending of a longer word (에서, 으로, or
# one syllable: 학교에서, 사과를, 했다), or a word of its own (것, 수)
_KOREAN_ENDING = re.compile(r"(?<=\w)(에서|으로|[이가은는을를의에도와과로다고것수])(?!\w)|(?<!\w)(에서|으로|[이가은는을를의에도와과로다고것수])(?!\w)")
_NUMBER = re.compile(r"\b[0-9_]+\b")  # a word without a letter


def _stop_words_found(text: str, words: list[str], rules: QualityRules) -> int:
    if not rules.stop_word_endings:
        return len(rules.stop_words.intersection(words))
    return len({a or b for a, b in _KOREAN_ENDING.findall(text)} & rules.stop_words)


def quality_problem(text: str, rules: QualityRules = ENGLISH) -> str | None:
    """The first rule `text` breaks (datatrove's reason names: `gopher_short_doc`, `line_punct_ratio`, …) or None."""
    tokens = _WORDS.findall(text)  # '' for a punctuation mark
    n_words = len(tokens)
    words = list(filter(None, tokens))
    if len(words) < rules.min_doc_words:
        return "gopher_short_doc"
    if len(words) > rules.max_doc_words:
        return "gopher_long_doc"
    avg = sum(map(len, words)) / len(words) if words else 0
    if avg < rules.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if avg > rules.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if text.count("#") / n_words > rules.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if (text.count("...") + text.count("…")) / n_words > rules.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines) > rules.max_bullet_lines_ratio:
        return "gopher_too_many_bullets"
    if sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines) > rules.max_ellipsis_lines_ratio:
        return "gopher_too_many_end_ellipsis"
    alpha = len(words) - len(_NUMBER.findall(text))  # words with a letter
    if alpha / n_words < rules.min_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if _stop_words_found(text, words, rules) < rules.min_stop_words:
        return "gopher_enough_stop_words"
    # FineWeb: line-level rules
    lines = [line for line in text.split("\n") if line.strip()]
    if sum(line.endswith(rules.stop_chars) for line in lines) / len(lines) < rules.line_punct_thr:
        return "line_punct_ratio"
    if sum(len(line) <= rules.short_line_length for line in lines) / len(lines) > rules.short_line_thr:
        return "short_line_ratio"
    if find_duplicates(lines)[1] / len(text.replace("\n", "")) > rules.char_duplicates_ratio:
        return "char_dup_ratio"
    if text.count("\n") / n_words > rules.new_line_ratio:
        return "list_ratio"
    return None

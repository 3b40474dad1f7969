"""Disguised spellings of offensive words: generated from plain spellings, and undone in a view.

People dodge word filters by spelling around them. Rather than listing those spellings, the profanity
filter *generates* them from the plain word (`korean_disguises`, `english_masked`): the keys typed on
a Korean keyboard left in English mode (시발 → tlqkf), romanised and mixed spellings (ssibal, 씨bal,
G랄), syllables split by spaces, digits or symbols (씨 발, 시1발), a masked syllable (개○끼), the
initials of longer words (ㅎㄴㅊ); masked letters in English words (sh*t). Disguises that change
letters are undone instead (`undisguised`): jamo spelled out (ㅅㅣㅂㅏㄹ), leetspeak (f4gg0t),
letters split by one separator (s h i t), stretched letters (fuuuuck) — in a view of the text that
maps every character back to the original.
"""

from __future__ import annotations

import functools
import re

from llamak.data.hangul import compose_jamo_spans, is_syllable, jamo, keyboard_keys, romanisations

MASKS = "*○●◯◎xX♡♥☆★□■◇◆#@?_"  # characters people type over a letter or syllable
_CLEAR_MASKS = "*○●◯◎♡♥☆★□■◇◆"  # ones that cannot be part of ordinary text next to a syllable
_SEPARATORS = r"(?:[\s\d\W_]|[xX])+"  # what gets typed between split syllables (씨 발, 시1발, 병.신)
_TYPED = r"(?:[^\w\s]|[\d_xX])"  # a separator other than a space
# particles and endings typed after a word in English mode (tlqkf + dk: 시발아), from their Hangul
_KEYED_ENDINGS = "|".join(keyboard_keys(e) for e in ("아", "야", "들", "이", "가", "은", "는", "을", "를", "네", "냐", "이네", "같은", "놈", "년", "새끼"))
ENGLISH_ENDINGS = ("", "s", "es", "ing", "in", "ed", "er", "ers", "y", "ty", "head", "heads", "face", "hole", "holes")


def korean_disguises(word: str) -> list[str]:
    """Regular expressions for the disguises of one Korean word (see the module docstring)."""
    syllables = [c for c in word if is_syllable(c)]
    out = []
    keys = keyboard_keys(word)
    if len(keys) >= 4:  # shorter key runs are English words too often
        out.append(rf"(?<![A-Za-z]){re.escape(keys)}(?:{_KEYED_ENDINGS})?(?![A-Za-z])")
    if 2 <= len(syllables) <= 3:  # longer words: hundreds of spellings nobody types
        latin = [r for r in romanisations(word, per_syllable=3) if re.search("[A-Za-z]", r)]
        whole = [r for r in latin if not any(map(is_syllable, r))]
        mixed = [r for r in latin if any(map(is_syllable, r))]
        if whole:
            out.append(r"(?<![A-Za-z])" + _longest_first(whole) + r"(?![A-Za-z])")
        if mixed:
            out.append(r"(?<![A-Za-z])" + _longest_first(mixed))
    if len(syllables) >= 2:
        # split, the word standing alone (not 질병 신고, 3시 발표): every syllable apart (씨 발, 개 새 끼), or
        # something other than a space typed inside (시1발, 병.신, 죽1여버린다); not one space (개 새끼, a puppy)
        n = len(syllables)
        out.append(r"(?<![\w])" + r"\s+".join(syllables) + r"(?![가-힣])")
        typed_inside = rf"(?=(?:[가-힣](?:{_SEPARATORS})?){{0,{n - 2}}}[가-힣]\s*{_TYPED})"
        out.append(r"(?<![\w])" + typed_inside + f"(?:{_SEPARATORS})?".join(syllables))
        # one syllable masked (병○, 개○끼): not the first; X and ? only in longer words
        mask = "[" + re.escape(MASKS if n >= 3 else _CLEAR_MASKS) + "]"
        for i in range(1, n):
            out.append(r"(?<![가-힣])" + "".join(mask if j == i else s for j, s in enumerate(syllables)))
    if len(syllables) >= 3:  # initial consonants (한남충 → ㅎㄴㅊ); two-syllable ones are too ambiguous (ㅈㅈ: GG)
        out.append(r"(?<![ㄱ-ㅎ])" + "".join(jamo(s)[0] for s in syllables) + r"(?![ㄱ-ㅎ])")
    return out


def _longest_first(spellings: list[str]) -> str:
    """One alternation of literal spellings, longer ones tried first (so ssibal wins over ssi)."""
    return "(?:" + "|".join(map(re.escape, sorted(spellings, key=len, reverse=True))) + ")"


def english_masked(word: str) -> str:
    """A word with masked letters (sh*t, f**k, c#nt): the first letter kept, any other maskable."""
    mask = "[" + re.escape("*#@_%$!") + "]"
    letters = "".join(f"(?:{re.escape(c)}|{mask})" for c in word[1:])
    endings = "|".join(e for e in ENGLISH_ENDINGS if e)
    return rf"\b(?=[A-Za-z]*[*#@_%$!]){re.escape(word[0])}{letters}(?:{endings})?(?![\w*#@_%$!])"


# ---------------------------------------------------------------------------- the undisguised view

_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "|": "i", "0": "o", "5": "s", "$": "s", "7": "t", "+": "t"})
_LEET_L = {**_LEET, ord("1"): "l", ord("|"): "l"}
_LEET_WORD = re.compile(r"(?<![\w@$!|+])(?=[\w@$!|+]*[A-Za-z])(?=[\w@$!|+]*[4@31!|05$7+])[A-Za-z@$][A-Za-z0-9@$!|+]*[A-Za-z0-9]")
_SPACED_LETTERS = re.compile(r"(?<![A-Za-z])(?![aAI] )[A-Za-z]([ .\-_*])[A-Za-z](?:\1[A-Za-z](?![A-Za-z]))+")
_STRETCHED = re.compile(r"([A-Za-z])\1{2,}")
_DECOMPOSED_JAMO = re.compile(r"[ㄱ-ㅎ][ㅏ-ㅣ1l|!]")


@functools.cache
def _view_gate():
    """One RE2 pass for "is there a disguise to undo?" (a superset of the four patterns below)."""
    import re2

    stretched = "|".join(c * 3 for c in "abcdefghijklmnopqrstuvwxyz")
    return re2.compile(rf"(?i)[A-Za-z@$][4@31!|05$7+]|\b[A-Za-z][ .\-_*][A-Za-z][ .\-_*][A-Za-z]\b|{stretched}|[ㄱ-ㅎ][ㅏ-ㅣ1l|!]")


def undisguised(text: str) -> list[tuple[str, list[int], list[int]]]:
    """Views of `text` with letter-changing disguises undone — each with, for every character, where
    what it came from starts and ends in `text`. Two views when a 1 or | may be an i or an l (b1tch,
    s1ut); none when there is nothing to undo."""
    if not _view_gate().search(text):
        return []
    views = [_view(text, _LEET)]
    if any(c in m.group() for m in _LEET_WORD.finditer(text) for c in "1|"):
        views.append(_view(text, _LEET_L))
    return [v for v in views if v is not None]


def _view(text: str, leet: dict) -> tuple[str, list[int], list[int]] | None:
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), non-overlapping

    def add(start: int, end: int, new: str) -> None:
        if all(end <= s or start >= e for s, e, _ in edits):
            edits.append((start, end, new))

    for m in _SPACED_LETTERS.finditer(text):
        add(m.start(), m.end(), re.sub(r"[^A-Za-z]", "", m.group()))
    for m in _LEET_WORD.finditer(text):
        add(m.start(), m.end(), m.group().translate(leet))
    for m in _STRETCHED.finditer(text):
        add(m.start(), m.end(), m.group(1))
    if _DECOMPOSED_JAMO.search(text):
        for piece, start, end in compose_jamo_spans(text):
            if end - start > 1 and len(piece) == 1:
                add(start, end, piece)
    if not edits:
        return None
    view, starts, ends, last = [], [], [], 0
    for start, end, new in sorted(edits):
        view += [text[last:start], new]
        starts += [*range(last, start), *[start] * len(new)]  # a replaced piece maps to all it replaced
        ends += [*range(last + 1, start + 1), *[end] * len(new)]
        last = end
    view.append(text[last:])
    starts += range(last, len(text))
    ends += range(last + 1, len(text) + 1)
    return "".join(view), starts, ends

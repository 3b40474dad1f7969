"""Hangul arithmetic for spotting disguised words: syllables ↔ jamo, the two-set keyboard, romanisation.

Pure functions over Unicode: a syllable is 0xAC00 + (initial × 21 + medial) × 28 + final.

    >>> keyboard_keys("시발"), keyboard_keys("개새끼")
    ('tlqkf', 'rotoRl')
    >>> compose_jamo("ㅅㅣㅂㅏㄹ 뭐야")
    '시발 뭐야'
"""

from __future__ import annotations

import itertools
import re

INITIALS = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
MEDIALS = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
FINALS = ("", *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ")

# The two-set (dubeolsik) layout: the Latin key under each jamo, compound jamo as their key pairs.
KEYS = dict(zip("ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ", "rRseEfaqQtTdwWczxvg"))
KEYS.update(zip("ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅛㅜㅠㅡㅣ", "koiOjpuPhynbml"))
KEYS.update({"ㅘ": "hk", "ㅙ": "ho", "ㅚ": "hl", "ㅝ": "nj", "ㅞ": "np", "ㅟ": "nl", "ㅢ": "ml", "ㄳ": "rt", "ㄵ": "sw", "ㄶ": "sg",
             "ㄺ": "fr", "ㄻ": "fa", "ㄼ": "fq", "ㄽ": "ft", "ㄾ": "fx", "ㄿ": "fv", "ㅀ": "fg", "ㅄ": "qt"})

# How people write each jamo in Latin letters: Revised Romanisation first, then common spellings.
ROMAN_INITIAL = {"ㄱ": ("g", "k"), "ㄲ": ("kk", "gg"), "ㄴ": ("n",), "ㄷ": ("d", "t"), "ㄸ": ("tt", "dd"), "ㄹ": ("r", "l"),
                 "ㅁ": ("m",), "ㅂ": ("b", "p"), "ㅃ": ("pp", "bb"), "ㅅ": ("s", "sh"), "ㅆ": ("ss", "s"), "ㅇ": ("",),
                 "ㅈ": ("j",), "ㅉ": ("jj",), "ㅊ": ("ch", "c"), "ㅋ": ("k",), "ㅌ": ("t",), "ㅍ": ("p",), "ㅎ": ("h",)}
ROMAN_MEDIAL = {"ㅏ": ("a",), "ㅐ": ("ae", "e"), "ㅑ": ("ya",), "ㅒ": ("yae",), "ㅓ": ("eo", "u"), "ㅔ": ("e",), "ㅕ": ("yeo", "yu"),
                "ㅖ": ("ye",), "ㅗ": ("o",), "ㅘ": ("wa",), "ㅙ": ("wae",), "ㅚ": ("oe",), "ㅛ": ("yo",), "ㅜ": ("u", "oo"),
                "ㅝ": ("wo",), "ㅞ": ("we",), "ㅟ": ("wi",), "ㅠ": ("yu",), "ㅡ": ("eu", "u"), "ㅢ": ("ui",), "ㅣ": ("i", "ee")}
ROMAN_FINAL = {"": ("",), "ㄱ": ("k", "g"), "ㄴ": ("n",), "ㄷ": ("t", "d"), "ㄹ": ("l", "r"), "ㅁ": ("m",), "ㅂ": ("p", "b"),
               "ㅅ": ("t", "s"), "ㅆ": ("t", "ss"), "ㅇ": ("ng",), "ㅈ": ("t", "j"), "ㅊ": ("t",), "ㅋ": ("k",), "ㅌ": ("t",),
               "ㅍ": ("p",), "ㅎ": ("t",), "ㄲ": ("k",)}


def is_syllable(c: str) -> bool:
    return "가" <= c <= "힣"


def jamo(syllable: str) -> tuple[str, str, str]:
    """(initial, medial, final) of one syllable; final is '' when there is none."""
    code = ord(syllable) - 0xAC00
    return INITIALS[code // 588], MEDIALS[code % 588 // 28], FINALS[code % 28]


def syllable(initial: str, medial: str, final: str = "") -> str:
    return chr(0xAC00 + (INITIALS.index(initial) * 21 + MEDIALS.index(medial)) * 28 + FINALS.index(final))


def keyboard_keys(word: str) -> str:
    """The keys typed for `word` on a two-set keyboard left in English mode (시발 → tlqkf)."""
    return "".join(KEYS[j] for c in word for j in (jamo(c) if is_syllable(c) else (c,)) if j)


# Latin letters read as a whole syllable (G랄 = 지랄, C발 = 씨발)
LETTER_NAMES = {"씨": ("c",), "시": ("c",), "지": ("g", "z"), "비": ("b",), "디": ("d",), "티": ("t",), "피": ("p",), "이": ("e",), "제": ("j",), "케": ("k",)}


def romanisations(word: str, per_syllable: int = 2) -> list[str]:
    """Latin spellings of `word`, whole or mixed with Hangul (씨발 → ssibal, sibal, 씨bal, ssi발, …):
    every syllable as itself or one of its first `per_syllable` romanisations, at least one in Latin."""
    options = []
    for c in word:
        if not is_syllable(c):
            options.append((c,))
            continue
        i, m, f = jamo(c)
        latin = [a + b + z for a in ROMAN_INITIAL[i] for b in ROMAN_MEDIAL[m] for z in ROMAN_FINAL.get(f, ("",))]
        options.append((c, *dict.fromkeys(latin[:per_syllable] + list(LETTER_NAMES.get(c, ())))))
    return [s for s in map("".join, itertools.product(*options)) if s != word]


# a consonant jamo, a vowel jamo (or 1, l, |, ! for ㅣ: ㅅ1발), maybe a final consonant
_DECOMPOSED = re.compile(r"([ㄱ-ㅎ])([ㅏ-ㅣ1l|!])((?:[ㄱ-ㅎ])(?![ㅏ-ㅣ]))?")


_LOOKS_LIKE_I = str.maketrans({"1": "ㅣ", "l": "ㅣ", "|": "ㅣ", "!": "ㅣ"})


def compose_jamo(text: str) -> str:
    """Jamo spelled out one by one (ㅅㅣㅂㅏㄹ) composed into syllables (시발); other text unchanged
    (same length per composed syllable is not kept: use `compose_jamo_spans` for offsets)."""
    return "".join(piece for piece, _, _ in compose_jamo_spans(text))


def compose_jamo_spans(text: str) -> list[tuple[str, int, int]]:
    """`text` cut into pieces (piece, start, end): composed syllables and untouched runs, for offset maps."""
    pieces, last = [], 0
    for m in _DECOMPOSED.finditer(text):
        initial, medial, final = m.group(1), m.group(2).translate(_LOOKS_LIKE_I), m.group(3) or ""
        if initial not in INITIALS or (final and final not in FINALS):
            continue
        if m.start() > last:
            pieces.append((text[last : m.start()], last, m.start()))
        pieces.append((syllable(initial, medial, final), m.start(), m.end()))
        last = m.end()
    if last < len(text):
        pieces.append((text[last:], last, len(text)))
    return pieces

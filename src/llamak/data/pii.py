"""Korean/English PII recognisers: find personal data in text and mask it with typed placeholders.

    >>> mask_pii("연락처는 010-1234-5678, 메일은 hong@example.co.kr입니다.")[0]
    '연락처는 <PHONE>, 메일은 <EMAIL>입니다.'

Each recogniser is a regular expression for the shape plus a validator for what a shape alone
cannot tell: a real calendar date and a valid gender/century digit for resident (RRN) and alien
(ARN) registration numbers, the Luhn check for cards, octets ≤ 255 for IPv4, and a nearby context
word for bank accounts, passports and driver licences (their digit shapes are common elsewhere).

The RRN check digit is computed but never required: numbers issued since October 2020 have a
random tail, so a well-formed number with a "wrong" check digit is still personal data.
Business representative numbers (1588-xxxx …) are not personal and are kept.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections import Counter
from dataclasses import dataclass

TYPES = ("EMAIL", "RRN", "ARN", "CARD", "PHONE", "ACCOUNT", "PASSPORT", "DRIVER_LICENSE", "IP")


@dataclass(frozen=True)
class PiiMatch:
    type: str
    start: int
    end: int
    value: str


# --------------------------------------------------------------------------- validators


def registration_type(digits: str) -> str | None:
    """'RRN', 'ARN' or None for a 13-digit registration number (date + gender/century digit)."""
    yy, mm, dd, g = int(digits[0:2]), int(digits[2:4]), int(digits[4:6]), digits[6]
    century = {"1": 1900, "2": 1900, "5": 1900, "6": 1900, "3": 2000, "4": 2000, "7": 2000, "8": 2000, "9": 1800, "0": 1800}[g]
    try:
        datetime.date(century + yy, mm, dd)
    except ValueError:
        return None
    return "ARN" if g in "5678" else "RRN"


def rrn_check_digit_ok(digits: str) -> bool:
    """The pre-2020 check digit; informative only (see the module docstring)."""
    total = sum(int(d) * w for d, w in zip(digits[:12], (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)))
    return (11 - total % 11) % 10 == int(digits[12])


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def only_digits(value: str) -> str:
    return re.sub(r"\D", "", value)


# --------------------------------------------------------------------------- patterns

_NOT_DIGIT_BEFORE = r"(?<![\d])"
_NOT_DIGIT_AFTER = r"(?![\d])(?!-\d)"

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9])")
FILE_EXTENSIONS = {"png", "jpg", "jpeg", "gif", "svg", "webp", "pdf", "bmp", "ico", "zip", "txt"}

REGISTRATION = re.compile(_NOT_DIGIT_BEFORE + r"(?<!\d-)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])[- ]?\d{7}" + _NOT_DIGIT_AFTER)

CARD = re.compile(
    _NOT_DIGIT_BEFORE + r"(?<!\d[- ])(?:\d{4}([- ]?)\d{4}\1\d{4}\1\d{4}|\d{4}([- ]?)\d{6}\2\d{5})" + _NOT_DIGIT_AFTER
)

PHONE = re.compile(
    r"(?<![\d+])(?:\+82[-. ]?|\(0|0)"
    r"(?:1[016789]|2|[3-6][1-5]|70)\)?[-. ]?\d{3,4}[-. ]?\d{4}" + _NOT_DIGIT_AFTER
)

ACCOUNT = re.compile(_NOT_DIGIT_BEFORE + r"(?<!\d-)\d{2,6}(?:-\d{2,7}){0,2}-\d{1,7}" + _NOT_DIGIT_AFTER)
ACCOUNT_CONTEXT = re.compile(r"계좌|입금|이체|송금|은행|농협|새마을금고|카카오뱅크|토스뱅크|우체국|account|bank", re.IGNORECASE)

PASSPORT = re.compile(r"(?<![A-Za-z0-9])[MSROD](?:\d{8}|\d{3}[A-Z]\d{4})(?![A-Za-z0-9])")
PASSPORT_CONTEXT = re.compile(r"여권|passport", re.IGNORECASE)

REGIONS = "서울|부산|경기|강원|충북|충남|전북|전남|경북|경남|제주|대구|인천|광주|대전|울산|세종"
DRIVER_LICENSE = re.compile(rf"(?:(?:{REGIONS})\s?\d{{2}}|(?<!\d)(?:1[1-9]|2[0-8])-\d{{2}})-\d{{6}}-\d{{2}}" + _NOT_DIGIT_AFTER)
LICENSE_CONTEXT = re.compile(r"면허|licen[cs]e", re.IGNORECASE)

IPV4 = re.compile(r"(?<![\d.vV])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?!\d)(?!\.\d)")

CONTEXT_WINDOW = 30  # characters before (and half of it after) a match searched for a context word


SENTENCE_END = re.compile(r"[!?\n]|(?<!\b[Nn]o)\.(?!\d)")  # "account no. 123…" stays one sentence


def _has_context(text: str, start: int, end: int, pattern: re.Pattern) -> bool:
    """A context word near the match, within its own sentence."""
    lo, hi = max(0, start - CONTEXT_WINDOW), min(len(text), end + CONTEXT_WINDOW // 2)
    for boundary in SENTENCE_END.finditer(text, lo, start):
        lo = boundary.end()
    boundary = SENTENCE_END.search(text, end, hi)
    return bool(pattern.search(text[lo : boundary.start() if boundary else hi]))


# --------------------------------------------------------------------------- recognisers


def _emails(text: str):
    for m in EMAIL.finditer(text):
        if m.group().rsplit(".", 1)[1].lower() not in FILE_EXTENSIONS:
            yield PiiMatch("EMAIL", m.start(), m.end(), m.group())


def _registrations(text: str):
    for m in REGISTRATION.finditer(text):
        kind = registration_type(only_digits(m.group()))
        if kind:
            yield PiiMatch(kind, m.start(), m.end(), m.group())


def _cards(text: str):
    for m in CARD.finditer(text):
        digits = only_digits(m.group())
        if luhn_ok(digits) and len(set(digits)) > 1:  # 0000-0000-0000-0000 passes Luhn but is a placeholder
            yield PiiMatch("CARD", m.start(), m.end(), m.group())


def _phones(text: str):
    for m in PHONE.finditer(text):
        digits = only_digits(m.group())
        national = digits[2:] if m.group().startswith("+82") else digits[1:]
        if national.startswith("10") and len(national) != 10:  # 010 numbers have a 4-digit middle
            continue
        yield PiiMatch("PHONE", m.start(), m.end(), m.group())


def _in_context(pattern: re.Pattern, context: re.Pattern, kind: str, digit_range: tuple[int, int] | None = None):
    def find(text: str):
        for m in pattern.finditer(text):
            if digit_range and not digit_range[0] <= len(only_digits(m.group())) <= digit_range[1]:
                continue
            if _has_context(text, m.start(), m.end(), context):
                yield PiiMatch(kind, m.start(), m.end(), m.group())

    return find


def _ips(text: str):
    for m in IPV4.finditer(text):
        if all(int(octet) <= 255 for octet in m.groups()):
            yield PiiMatch("IP", m.start(), m.end(), m.group())


# In priority order: where two matches overlap, the earlier recogniser wins. Each with the pattern
# of its shape, which the prefilter below tests.
RECOGNISERS = [
    (_emails, EMAIL),
    (_registrations, REGISTRATION),
    (_cards, CARD),
    (_phones, PHONE),
    (_in_context(DRIVER_LICENSE, LICENSE_CONTEXT, "DRIVER_LICENSE"), DRIVER_LICENSE),
    (_in_context(PASSPORT, PASSPORT_CONTEXT, "PASSPORT"), PASSPORT),
    (_in_context(ACCOUNT, ACCOUNT_CONTEXT, "ACCOUNT", digit_range=(10, 14)), ACCOUNT),
    (_ips, IPV4),
]


@functools.cache
def _shapes():
    """One RE2 set of the recognisers' shapes (linear time, all at once): which could match a text.
    Most prose matches none and costs ~10 µs instead of eight regular-expression passes."""
    import re2

    from llamak.data.re2_prefilter import re2_superset

    shapes = re2.Set.SearchSet(re2.Options())
    for _, shape in RECOGNISERS:
        shapes.Add(re2_superset(shape.pattern))
    shapes.Compile()
    return shapes


def candidates(text: str) -> list[int]:
    """Indices of the recognisers whose shape occurs in `text`."""
    return sorted(_shapes().Match(text) or ())


def find_pii(text: str) -> list[PiiMatch]:
    """Non-overlapping PII matches in text order."""
    taken: list[PiiMatch] = []
    for index in candidates(text):
        for match in RECOGNISERS[index][0](text):
            if all(match.end <= t.start or match.start >= t.end for t in taken):
                taken.append(match)
    return sorted(taken, key=lambda m: m.start)


def mask_pii(text: str, placeholder: str = "<{type}>") -> tuple[str, Counter]:
    """Replace each PII value with a typed placeholder; also return the counts by type."""
    matches = find_pii(text)
    out, last = [], 0
    for m in matches:
        out += [text[last : m.start], placeholder.format(type=m.type)]
        last = m.end
    out.append(text[last:])
    return "".join(out), Counter(m.type for m in matches)

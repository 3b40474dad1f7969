"""llamak's datatrove pipeline steps: normalisation, ko/en routing, quality, Korean PII, profanity.

Each is a small datatrove step, so the same pipeline runs on the Local, Slurm or Ray executor.
Filters return a distinct drop reason (`language_ja`, `pii`, `profanity`) and count what they
mask (`pii_RRN`, `profanity_SLUR`, …) in datatrove's stats.
"""

from __future__ import annotations

import re
import unicodedata

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.formatters.base import BaseFormatter

# UTF-8 bytes read as Latin-1/cp1252: a lead byte (Ã, ì, ë, …) followed by a continuation character.
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
# what the slow path would change: control characters, other line breaks, runs of spaces, spaces at line ends
_ODD_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\u00a0\u3000\x85\u2028\u2029\u2000-\u200a\u202f\u205f]")
_SPACE_AT_LINE_END = re.compile(r"[^\S\n]\n|\n[^\S\n]")


def _needs_work(text: str) -> bool:
    """Whether the slow path would change `text`: control characters, other line breaks or spaces,
    runs of spaces, spaces at line ends (substring tests first: one regular expression with all of
    them costs 10× more)."""
    return (
        "  " in text or text[:1].isspace() or text[-1:].isspace() or bool(_ODD_CHARACTER.search(text))
        or (("\n" in text) and bool(_SPACE_AT_LINE_END.search(text)))
    )


class Normalize(BaseFormatter):
    """Mojibake repaired (ftfy, only where its telltale pairs appear: it is slow), Unicode NFC,
    control characters removed, runs of spaces collapsed, lines trimmed."""

    name = "🔤 normalize"

    def format(self, text: str) -> str:
        if _MOJIBAKE.search(text):
            import ftfy

            fixed = ftfy.fix_encoding(text)
            if fixed != text:
                self.stat_update("mojibake_repaired")
                text = fixed
        if unicodedata.is_normalized("NFC", text) and not _needs_work(text):
            return text  # most documents: nothing below would change them
        text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
        return "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines()).strip()


_HANGUL_RUN = re.compile(r"[가-힣ㄱ-ㅎㅏ-ㅣ]+")
_LETTER_RUN = re.compile(r"[^\W\d_]+")
_ASCII_WORD = re.compile(r"[A-Za-z]+")
# Words frequent in English prose and rare in other Latin-script languages (not "a", "in", "is", "was":
# Spanish, German and Dutch use them too)
_ENGLISH_MARKERS = frozenset({"the", "and", "of", "that", "with", "which", "this", "from", "have", "were", "are", "for", "by", "not", "The"})


def detect_language(text: str, hangul_share: float = 0.3) -> str:
    """'ko' when Hangul makes up `hangul_share` of the letters; 'en' for prose in ASCII letters whose
    words are ≥ 10 % English function words; else py3langid's guess (offline, ~1.3 ms a document:
    the fast paths decide the documents it would call ko or en)."""
    sample = text[:5000]
    hangul = sum(map(len, _HANGUL_RUN.findall(sample)))
    if hangul:
        letters = sum(map(len, _LETTER_RUN.findall(sample)))
        if hangul / letters >= hangul_share:
            return "ko"
    words = _ASCII_WORD.findall(sample)
    if len(words) >= 20 and sum(w in _ENGLISH_MARKERS for w in words) >= 0.1 * len(words):
        ascii_letters = sum(map(len, words))
        if ascii_letters >= 0.95 * sum(map(len, _LETTER_RUN.findall(sample))):
            return "en"
    import py3langid

    return py3langid.classify(sample)[0]


class LanguageRouter(BaseFilter):
    """Tags `metadata["language"]`; keeps `keep` ('ko', 'en') or, with 'auto', Korean and English."""

    name = "🌐 ko/en language"
    _requires_dependencies = ["py3langid"]

    def __init__(self, keep: str = "auto", exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.keep = {"ko", "en"} if keep == "auto" else {keep}

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        lang = detect_language(doc.text)
        doc.metadata["language"] = lang
        return True if lang in self.keep else (False, f"language_{lang}")


class QualityFilter(BaseFilter):
    """Gopher quality and FineWeb line rules (`llamak.data.quality`: datatrove's rules and thresholds
    from string statistics, ~100× faster), with Korean settings for Korean text.

    The drop reason names the language and the rule, e.g. `ko_gopher_short_doc`.
    """

    name = "✨ quality"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        from llamak.data.quality import ENGLISH, KOREAN, quality_problem

        lang = "ko" if (doc.metadata.get("language") or detect_language(doc.text)) == "ko" else "en"
        problem = quality_problem(doc.text, KOREAN if lang == "ko" else ENGLISH)
        return True if problem is None else (False, f"{lang}_{problem}")


class MaskingFilter(BaseFilter):
    """Masks spans found by `mask(text) -> (text, counts)`; with mode `drop`, drops the document
    instead. Counts go to the stats as `<reason>_<TYPE>`."""

    reason = "masked"

    def __init__(self, mode: str = "mask", exclusion_writer=None):
        super().__init__(exclusion_writer)
        self.mode = mode

    def mask(self, text: str):
        raise NotImplementedError

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        masked, counts = self.mask(doc.text)
        for kind, n in counts.items():
            self.stat_update(f"{self.reason}_{kind}", value=n)
        if counts and self.mode == "drop":
            return False, self.reason
        doc.text = masked
        return True


class MaskPII(MaskingFilter):
    """Korean/English PII (`llamak.data.pii`): `mask` with typed placeholders, or `drop` the document."""

    name = "🔏 Korean PII"
    reason = "pii"

    def mask(self, text: str):
        from llamak.data.pii import mask_pii

        return mask_pii(text)


class MaskProfanity(MaskingFilter):
    """Profanity/sexual/slur/threat (`llamak.data.profanity`): `mask` the spans or `drop` the document."""

    name = "🧼 profanity"
    reason = "profanity"
    _requires_dependencies = [("kiwipiepy", "kiwipiepy")]

    def __init__(self, mode: str = "mask", exclusion_writer=None, model: bool = False):
        super().__init__(mode, exclusion_writer)
        self.model = model

    def mask(self, text: str):
        from llamak.data.profanity import default_filter  # one per worker process, shared by its tasks

        return default_filter(self.model).mask(text)

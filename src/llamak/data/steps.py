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
_HANGUL = re.compile(r"[가-힣ㄱ-ㅎㅏ-ㅣ]")
_LETTER = re.compile(r"[^\W\d_]")


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
        text = _CONTROL.sub("", unicodedata.normalize("NFC", text))
        return "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines()).strip()


def detect_language(text: str, hangul_share: float = 0.3) -> str:
    """'ko' when Hangul makes up `hangul_share` of the letters, else py3langid's guess (offline)."""
    letters = _LETTER.findall(text[:5000])
    if letters and sum(bool(_HANGUL.match(c)) for c in letters) / len(letters) >= hangul_share:
        return "ko"
    import py3langid

    return py3langid.classify(text[:5000])[0]


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


# Gopher/FineWeb count words; for Korean a "word" is a Kiwi morpheme (about 1.5 characters, and
# particles and endings are words of their own), and a line says in ~15 characters what English
# says in ~30. Stop words are the commonest particles and endings. Checked on the bundled corpora
# (law, bills, encyclopaedic text: all pass) and on the test's broken documents (all fail).
KOREAN_STOP_WORDS = ("이", "가", "은", "는", "을", "를", "의", "에", "에서", "도", "와", "과", "로", "으로", "하", "다", "고", "있", "것", "수")
KOREAN_GOPHER = dict(min_avg_word_length=1, max_avg_word_length=6, max_non_alpha_words_ratio=0.7, min_stop_words=3, stop_words=KOREAN_STOP_WORDS)
KOREAN_FINEWEB = dict(short_line_length=15, stop_chars=(".", "!", "?", "…", "다", "요", ")", '"', "'", "。", ":", ";"))


class QualityFilter(BaseFilter):
    """datatrove's Gopher quality and FineWeb line filters, with Korean settings for Korean text.

    The drop reason names the language and the rule, e.g. `ko_gopher_short_doc`.
    """

    name = "✨ quality"
    _requires_dependencies = [("kiwipiepy", "kiwipiepy"), "spacy"]

    def __init__(self, exclusion_writer=None):
        from datatrove.pipeline.filters import FineWebQualityFilter, GopherQualityFilter

        from llamak.data.korean import KoreanWords

        super().__init__(exclusion_writer)
        korean = KoreanWords()
        self.rules = {
            "ko": [GopherQualityFilter(language=korean, **KOREAN_GOPHER), FineWebQualityFilter(language=korean, **KOREAN_FINEWEB)],
            "en": [GopherQualityFilter(), FineWebQualityFilter()],
        }

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        rules = "ko" if (doc.metadata.get("language") or detect_language(doc.text)) == "ko" else "en"
        for rule in self.rules[rules]:
            verdict = rule.filter(doc)
            if verdict is not True:
                return False, f"{rules}_{verdict[1] if isinstance(verdict, tuple) else rule.name}"
        return True


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
    _filter = None

    def mask(self, text: str):
        if self._filter is None:  # built in the worker process (Kiwi is not picklable)
            from llamak.data.profanity import ProfanityFilter

            self._filter = ProfanityFilter()
        return self._filter.mask(text)

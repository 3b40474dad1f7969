"""llamak's datatrove pipeline steps: normalisation, ko/en language routing, Korean PII, profanity.

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

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_HANGUL = re.compile(r"[가-힣ㄱ-ㅎㅏ-ㅣ]")
_LETTER = re.compile(r"[^\W\d_]")


class Normalize(BaseFormatter):
    """Unicode NFC, control characters removed, runs of spaces collapsed, lines trimmed."""

    name = "🔤 normalize"

    def format(self, text: str) -> str:
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

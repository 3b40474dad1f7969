"""Input and output checks for the model card's inappropriate uses.

Rules come from the data pipeline (the profanity/hate lexicon, the Korean PII recognisers) plus
`resources/guard/rules.yaml` (requests for illegal goods, harmful content, misinformation, political
campaigning). Modes: `off`; `flag` — answer, and report what was found in the response's
`llamak_guard` field; `block` — answer a request that breaks a rule, or a completion that does, with
a polite refusal in the user's language (finish_reason `content_filter`, as OpenAI does).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass, field

import yaml

from llamak.errors import LlamakError

MODES = ("off", "flag", "block")
BLOCKING_PROFANITY = {"sexual", "slur", "threat"}  # a user's plain swearing is flagged, not refused

REFUSALS = {
    "ko": "죄송하지만 이 요청은 도와드릴 수 없습니다. 다른 질문이 있으시면 말씀해 주세요.",
    "en": "Sorry, I can't help with that request. Is there something else I can help you with?",
}


@dataclass
class Verdict:
    categories: list[str] = field(default_factory=list)  # e.g. input:misinformation, output:pii:PHONE
    blocked: bool = False

    @property
    def flagged(self) -> bool:
        return bool(self.categories)

    def merge(self, other: "Verdict") -> "Verdict":
        return Verdict(list(dict.fromkeys(self.categories + other.categories)), self.blocked or other.blocked)

    def as_dict(self) -> dict:
        return {"flagged": self.flagged, "blocked": self.blocked, "categories": self.categories}


@functools.cache
def _rules() -> dict[str, list[tuple[re.Pattern, re.Pattern]]]:
    path = importlib.resources.files("llamak").joinpath("resources", "guard", "rules.yaml")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {category: [(re.compile(r["ask"], re.I), re.compile(r["what"], re.I)) for r in rules] for category, rules in raw.items()}


def language(text: str) -> str:
    from llamak.train.rewards import hangul_share

    return "ko" if hangul_share(text) >= 0.3 else "en"


def refusal(text: str) -> str:
    """The refusal in the language of `text` (the user's message)."""
    return REFUSALS[language(text)]


def misuse(text: str) -> list[str]:
    return [c for c, rules in _rules().items() if any(ask.search(text) and what.search(text) for ask, what in rules)]


class Guard:
    def __init__(self, mode: str = "off"):
        if mode not in MODES:
            raise LlamakError(f"guard {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def check_input(self, text: str) -> Verdict:
        """A user's message: inappropriate-use requests and hate/sexual/threat language block;
        plain profanity and personal data in the request are only flagged."""
        if not self.active:
            return Verdict()
        categories = [f"input:{c}" for c in misuse(text)]
        hits = _profanity_categories(text)
        categories += [f"input:profanity:{c}" for c in sorted(hits)]
        block = bool(misuse(text)) or bool(hits & BLOCKING_PROFANITY)
        categories += [f"input:pii:{t}" for t in _pii_types(text)]
        return Verdict(categories, self.mode == "block" and block)

    def check_output(self, text: str) -> Verdict:
        """A completion: any profanity or personal data (a model must not leak it) blocks."""
        if not self.active:
            return Verdict()
        categories = [f"output:profanity:{c}" for c in sorted(_profanity_categories(text))]
        categories += [f"output:pii:{t}" for t in _pii_types(text)]
        return Verdict(categories, self.mode == "block" and bool(categories))


def _profanity_categories(text: str) -> set[str]:
    from llamak.data.profanity import default_filter  # Kiwi and datatrove load on first use, not at import

    return {h.category for h in default_filter().find(text)}


def _pii_types(text: str) -> list[str]:
    from llamak.data.pii import find_pii

    return sorted({m.type for m in find_pii(text)})

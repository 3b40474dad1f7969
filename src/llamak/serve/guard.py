"""Input and output checks for the model card's inappropriate uses.

Three layers, each catching what the one before misses:

1. **rules** (no dependencies): the data pipeline's profanity/hate lexicon and Korean PII
   recognisers, plus `resources/guard/rules.yaml` (requests for illegal goods, harmful content,
   misinformation, political campaigning) — precise, but they miss most rephrased requests;
2. **a learned prompt classifier** (`llamak.serve.classifier`, shipped, ~1 ms on a CPU) over the
   MLCommons hazard taxonomy and the card's inappropriate uses;
3. optionally **a safety model** (`--guard-model`, `llamak.serve.judge`): Llama Guard 3 or the
   served model itself as a judge.

Modes: `off`; `flag` — answer, and report what was found in the response's `llamak_guard` field;
`block` — answer a request that breaks a rule, or a completion that does, with a polite refusal in
the user's language (finish_reason `content_filter`, as OpenAI does). Outputs are checked by the
rules only (the classifier and the judge read requests).
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
    categories: list[str] = field(default_factory=list)  # e.g. input:misinformation, input:classifier, output:pii:PHONE
    blocked: bool = False
    score: float | None = None  # the classifier's probability that the request is harmful

    @property
    def flagged(self) -> bool:
        return bool(self.categories)

    def merge(self, other: "Verdict") -> "Verdict":
        scores = [s for s in (self.score, other.score) if s is not None]
        return Verdict(list(dict.fromkeys(self.categories + other.categories)), self.blocked or other.blocked, max(scores) if scores else None)

    def as_dict(self) -> dict:
        out = {"flagged": self.flagged, "blocked": self.blocked, "categories": self.categories}
        return out if self.score is None else {**out, "score": round(self.score, 4)}


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
    def __init__(self, mode: str = "off", classifier: bool = True, judge=None):
        """`classifier`: use the learned prompt classifier; `judge`: a `SafetyJudge` (or None)."""
        if mode not in MODES:
            raise LlamakError(f"guard {mode!r}: expected one of {', '.join(MODES)}")
        self.mode = mode
        self.classifier = classifier
        self.judge = judge

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def close(self) -> None:
        """Stop the judge model's engine when the guard started it."""
        if self.judge is not None and self.judge.owns_engine:
            self.judge.engine.close()

    def check_input(self, text: str) -> Verdict:
        """A user's message: inappropriate-use requests (rules, classifier, judge) and hate/sexual/threat
        language block; plain profanity and personal data in the request are only flagged."""
        verdict = self._input_without_judge(text)
        if self.active and self.judge is not None:
            verdict = verdict.merge(self._judged(self.judge.verdict_sync(text)))
        return verdict

    async def check_input_async(self, text: str) -> Verdict:
        """`check_input` for an event loop: the judge's generation is awaited, not blocked on."""
        verdict = self._input_without_judge(text)
        if self.active and self.judge is not None:
            verdict = verdict.merge(self._judged(await self.judge.verdict(text)))
        return verdict

    def _input_without_judge(self, text: str) -> Verdict:
        if not self.active:
            return Verdict()
        rules = misuse(text)
        categories = [f"input:{c}" for c in rules]
        hits = _profanity_categories(text)
        categories += [f"input:profanity:{c}" for c in sorted(hits)]
        block = bool(rules) or bool(hits & BLOCKING_PROFANITY)
        score = None
        if self.classifier:
            from llamak.serve.classifier import default_classifier

            harmful, score = default_classifier().harmful(text)
            if harmful:
                categories.append("input:classifier")
                block = True
        categories += [f"input:pii:{t}" for t in _pii_types(text)]
        return Verdict(categories, self.mode == "block" and block, score)

    def _judged(self, judged) -> Verdict:
        if judged.unsafe is None:  # an answer out of format: reported, not acted on
            return Verdict(["input:guard_model:unparsed"])
        if not judged.unsafe:
            return Verdict()
        return Verdict([f"input:guard_model:{c}" for c in judged.categories] or ["input:guard_model"], self.mode == "block")

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


def block_rates(rows: list[dict], guard: "Guard", by: str | None = None) -> dict[str, tuple[float, float, int]]:
    """{group: (block rate on harmful prompts, false-block rate on benign ones, prompts)} for labelled
    rows (`prompt`, `harmful`), overall under "all" and per value of the field `by` (lang, style, …)."""
    blocked = [(r, guard.check_input(r["prompt"]).blocked) for r in rows]
    groups = {"all": blocked}
    if by:
        for r, b in blocked:
            groups.setdefault(f"{by}={r.get(by, '-')}", []).append((r, b))

    def rate(items, harmful):
        chosen = [b for r, b in items if r["harmful"] == harmful]
        return sum(chosen) / len(chosen) if chosen else float("nan")

    return {name: (rate(items, True), rate(items, False), len(items)) for name, items in groups.items()}

"""Korean/English profanity, sexual insults, slurs and threats: find them, mask them or drop the text.

    >>> ProfanityFilter().mask("시발점에서 출발했는데 씨발 길이 막혔다")
    ('시발점에서 출발했는데 <PROFANITY> 길이 막혔다', Counter({'PROFANITY': 1}))

Morpheme-aware: Kiwi (kiwipiepy) analyses the text, and a lexicon morpheme (a regular expression
over one whole token, so spelling variants such as 쉬발 or 씨이이발 share an entry) matches only
with the right part of speech, so inflected and particle-attached forms are caught (병신이네,
지랄하네, 개새끼야) while longer words that merely contain the syllables are not (시발점 is one
noun; "보지 마" is a verb, not the noun). An entry may also ask for the tag of the token before it
(년 after an adnominal, 미친 년, is the insult; after a numeral it is a year). Surface patterns add
what morphemes cannot see: jamo abbreviations (ㅅㅂ), letters split by spaces, digits or symbols
(씨 발, 시1발 — standalone only, so not 3시 발표 or A씨 발언), phrases (미친놈, 죽여 버린다),
words Kiwi splits apart and English words. An allow list of patterns removes innocent text (시발역,
병신년 새해, 8등신). The lexicon is ours: `resources/profanity/lexicon.yaml`, by category
(profanity, sexual, slur, threat).
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections import Counter
from dataclasses import dataclass

import yaml

from llamak.data.korean import morphemes

CATEGORIES = ("profanity", "sexual", "slur", "threat")


@dataclass(frozen=True)
class Hit:
    category: str
    start: int
    end: int
    value: str


def load_lexicon() -> dict:
    path = importlib.resources.files("llamak").joinpath("resources", "profanity", "lexicon.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


class ProfanityFilter:
    def __init__(self, lexicon: dict | None = None):
        lexicon = lexicon or load_lexicon()
        self.morphemes: list[tuple[str, re.Pattern, set[str], set[str] | None]] = []
        self.patterns: list[tuple[str, re.Pattern]] = []
        allow: list[str] = []
        for category in CATEGORIES:
            entry = lexicon.get(category) or {}
            # a morpheme form is a regular expression over one whole Kiwi token (a plain word matches
            # itself), with the tags it may carry: a list, or {tags: [...], after: [...]} when the
            # token before must carry one of the `after` tags (년 after an adnominal: 미친 년, 파는 년)
            by_tags: dict[tuple, list[str]] = {}
            for form, spec in (entry.get("morphemes") or {}).items():
                tags, after = (spec, None) if isinstance(spec, list) else (spec["tags"], spec.get("after"))
                by_tags.setdefault((frozenset(tags), frozenset(after) if after else None), []).append(form)
            for (tags, after), forms in by_tags.items():
                self.morphemes.append((category, re.compile("|".join(f"(?:{f})" for f in forms)), set(tags), after))
            for pattern in entry.get("patterns") or []:
                self.patterns.append((category, re.compile(pattern, re.IGNORECASE)))
            allow += entry.get("allow") or []
        self.allowed = re.compile("|".join(allow), re.IGNORECASE) if allow else None

    def find(self, text: str) -> list[Hit]:
        """Non-overlapping offensive spans in text order (allow-listed compounds excluded)."""
        hits: list[Hit] = []
        if re.search(r"[가-힣]", text):
            previous = None
            for token in morphemes(text):  # shared with (and usually cached by) the quality filter
                tag = getattr(token.tag, "value", token.tag).split("-")[0]  # 'VV-R' → 'VV'
                for category, form, tags, after in self.morphemes:
                    if tag in tags and (after is None or previous in after) and form.fullmatch(token.form):
                        hits.append(Hit(category, token.start, token.end, text[token.start : token.end]))
                        break
                previous = tag
        for category, pattern in self.patterns:
            hits += [Hit(category, m.start(), m.end(), m.group()) for m in pattern.finditer(text) if m.end() > m.start()]
        if self.allowed is not None:
            safe = [(m.start(), m.end()) for m in self.allowed.finditer(text)]
            hits = [h for h in hits if not any(a <= h.start and h.end <= b for a, b in safe)]
        chosen: list[Hit] = []
        for hit in sorted(hits, key=lambda h: (h.start, -(h.end - h.start))):
            if not chosen or hit.start >= chosen[-1].end:
                chosen.append(hit)
        return chosen

    def is_offensive(self, text: str) -> bool:
        return bool(self.find(text))

    def mask(self, text: str, placeholder: str = "<{category}>") -> tuple[str, Counter]:
        hits = self.find(text)
        out, last = [], 0
        for h in hits:
            out += [text[last : h.start], placeholder.format(category=h.category.upper())]
            last = h.end
        out.append(text[last:])
        return "".join(out), Counter(h.category.upper() for h in hits)


@functools.cache
def default_filter() -> ProfanityFilter:
    """One filter on the shipped lexicon per process (building one loads Kiwi and compiles the lexicon)."""
    return ProfanityFilter()

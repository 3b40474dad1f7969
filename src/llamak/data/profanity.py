"""Korean/English profanity, sexual insults, slurs and threats: find them, mask them or drop the text.

    >>> ProfanityFilter().mask("시발점에서 출발했는데 씨발 길이 막혔다")
    ('시발점에서 출발했는데 <PROFANITY> 길이 막혔다', Counter({'PROFANITY': 1}))

The lexicon (`resources/profanity/lexicon.yaml`, ours, by category: profanity, sexual, slur,
threat) has four kinds of entries:

- **morphemes** — a regular expression over one whole Kiwi morpheme with the part of speech it
  must carry, so inflected and particle-attached forms are caught (병신이네, 지랄하네) while longer
  words that merely contain the syllables are not (시발점 is one noun; "보지 마" is a verb). An
  entry may also ask for the tag of the token before it (년 after an adnominal: 미친 년).
- **patterns** — regular expressions over the surface text: jamo abbreviations (ㅅㅂ), phrases
  (죽여 버린다), words Kiwi splits apart, English words.
- **spellings** — plain words from which the disguises people use are *generated* rather than
  listed: the keys typed on a Korean keyboard left in English mode (tlqkf), romanised or mixed
  spellings (ssibal, 씨bal), syllables split by spaces, digits or symbols (씨 발, 시1발, 병.신),
  a masked syllable (개○끼); for English words, masked letters (sh*t, f**k).
- **allow** — innocent text that contains a match (시발역, 병신년 새해, 8등신).

Before matching, disguises that change letters are undone in a second view of the text: jamo
spelled one by one (ㅅㅣㅂㅏㄹ), leetspeak (f4gg0t, b1tch), letters split by spaces (s h i t),
stretched letters (fuuuuck). Hits in a view map back to the original characters.

Fast: one RE2 set (linear time, all rules at once) tells which rules can match a text; only those
run as Python regular expressions, and Kiwi analyses only a window around a possible morpheme.
Most documents in a corpus have no candidate at all and cost ~20 µs.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from collections import Counter
from dataclasses import dataclass

import yaml

from llamak.data.disguise import english_masked, korean_disguises, undisguised
from llamak.data.hangul import is_syllable, jamo
from llamak.data.re2_prefilter import alternatives, re2_superset

CATEGORIES = ("profanity", "sexual", "slur", "threat")  # the lexicon's; the classifier's hits are "offensive"
_HANGUL = re.compile("[가-힣ㄱ-ㅣ]")


@dataclass(frozen=True)
class Hit:
    category: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class Rule:
    category: str
    source: str  # a regular expression, compiled on first use (most rules never run on a given corpus)
    morpheme: bool = False  # a candidate for the morpheme rules (checked by Kiwi), not a hit itself

    @property
    def pattern(self) -> re.Pattern:
        return _compiled(self.source)


@functools.cache
def _compiled(source: str) -> re.Pattern:
    return re.compile(source, re.IGNORECASE)


def load_lexicon() -> dict:
    path = importlib.resources.files("llamak").joinpath("resources", "profanity", "lexicon.yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- the filter


class ProfanityFilter:
    def __init__(self, lexicon: dict | None = None, model: bool = False):
        """`model`: also flag sentences the learned classifier scores offensive (`llamak.data.profanity_model`)."""
        import re2

        self.model = model
        lexicon = lexicon or load_lexicon()
        self.morphemes: list[tuple[str, re.Pattern, set[str], set[str] | None]] = []
        self.rules: list[Rule] = []
        allow: list[str] = []
        for category in CATEGORIES:
            entry = lexicon.get(category) or {}
            # a morpheme form is a regular expression over one whole Kiwi token, with the tags it may
            # carry: a list, or {tags: [...], after: [...]} when the token before must carry an `after` tag
            by_tags: dict[tuple, list[str]] = {}
            for form, spec in (entry.get("morphemes") or {}).items():
                tags, after = (spec, None) if isinstance(spec, list) else (spec["tags"], spec.get("after"))
                by_tags.setdefault((frozenset(tags), frozenset(after) if after else None), []).append(form)
            for (tags, after), forms in by_tags.items():
                self.morphemes.append((category, re.compile("|".join(f"(?:{f})" for f in forms)), set(tags), after))
                for form in forms:
                    self.rules.append(Rule(category, _morpheme_candidate(form, tags, after), morpheme=True))
            patterns = list(entry.get("patterns") or [])
            for word in entry.get("spellings") or []:
                patterns += korean_disguises(word) if any(map(is_syllable, word)) else [english_masked(word)]
            self.rules += [Rule(category, a) for p in patterns for a in alternatives(p)]
            allow += entry.get("allow") or []
        self.allowed = re.compile("|".join(allow), re.IGNORECASE) if allow else None
        # two RE2 sets: rules with Korean letters (run on text with Hangul) and the rest; each has room
        # for the automaton it builds as it meets text (a full one runs in ~25 µs per 1,000 characters)
        self.gates = []
        for korean in (True, False):
            options = re2.Options()
            options.case_sensitive = False
            options.max_mem = 64 << 20
            gate, indices = re2.Set.SearchSet(options), []
            for i, rule in enumerate(self.rules):
                superset = re2_superset(rule.source)
                if bool(_HANGUL.search(superset)) == korean:
                    gate.Add(superset)
                    indices.append(i)
            gate.Compile()
            self.gates.append((korean, gate, indices))

    def find(self, text: str) -> list[Hit]:
        """Non-overlapping offensive spans in text order (allow-listed compounds excluded)."""
        hits = self._find(text)
        for seen, starts, ends in undisguised(text):
            hits += [Hit(h.category, starts[h.start], ends[h.end - 1], text[starts[h.start] : ends[h.end - 1]]) for h in self._find(seen)]
        if self.allowed is not None and hits:
            safe = [(m.start(), m.end()) for m in self.allowed.finditer(text)]
            hits = [h for h in hits if not any(a <= h.start and h.end <= b for a, b in safe)]
        if self.model:
            hits += self._model_hits(text, hits)
        chosen: list[Hit] = []
        for hit in sorted(hits, key=lambda h: (h.start, -(h.end - h.start))):
            if not chosen or hit.start >= chosen[-1].end:
                chosen.append(hit)
        return chosen

    def _model_hits(self, text: str, found: list[Hit]) -> list[Hit]:
        """The sentences without a rule hit that the classifier scores offensive, each as one hit."""
        from llamak.data.profanity_model import default_model, sentences

        model = default_model()
        spans = [(s, e) for s, e in sentences(text) if not any(s <= h.start < e for h in found)]
        if not spans:
            return []
        scores = model.scores([text[s:e] for s, e in spans])
        return [Hit("offensive", s, e, text[s:e]) for (s, e), score in zip(spans, scores) if score >= model.threshold]

    def _find(self, text: str) -> list[Hit]:
        matched = []
        for korean, gate, indices in self.gates:
            if not korean or _HANGUL.search(text):
                matched += [indices[i] for i in gate.Match(text) or ()]
        hits, windows = [], []
        for index in matched:
            rule = self.rules[index]
            for m in rule.pattern.finditer(text):
                if m.end() == m.start():
                    continue
                if rule.morpheme:
                    windows.append(_window(text, m.start(), m.end()))
                else:
                    hits.append(Hit(rule.category, m.start(), m.end(), m.group()))
        for start, end in _merge(windows):
            hits += self._morpheme_hits(text, start, end)
        return hits

    def _morpheme_hits(self, text: str, start: int, end: int) -> list[Hit]:
        from llamak.data.korean import morphemes

        hits, previous = [], None
        for token in morphemes(text[start:end]):
            tag = getattr(token.tag, "value", token.tag).split("-")[0]  # 'VV-R' → 'VV'
            for category, form, tags, after in self.morphemes:
                if tag in tags and (after is None or previous in after) and form.fullmatch(token.form):
                    s, e = start + token.start, start + token.end
                    hits.append(Hit(category, s, e, text[s:e]))
                    break
            previous = tag
        return hits

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


# adnominal endings end in ㄴ or ㄹ (미친, 파는, 할): the syllables before a 년 that may be the insult
_ADNOMINAL = "".join(c for c in map(chr, range(0xAC00, 0xD7A4)) if jamo(c)[2] in ("ㄴ", "ㄹ"))


def _morpheme_candidate(form: str, tags: frozenset, after: frozenset | None) -> str:
    """Where a morpheme rule may match, in surface text: the form itself, a verb or adjective stem with
    any syllable after its first (꼴리 → 꼴려), a 년 after a syllable ending in ㄴ/ㄹ (미친 년)."""
    if after:
        return f"[{_ADNOMINAL}]\\s?(?:{form})"
    if tags & {"VV", "VA"}:
        return "|".join(f"{f[0]}[가-힣]" if len(f) > 1 else f for f in form.split("|"))
    return form


def _window(text: str, start: int, end: int, reach: int = 12) -> tuple[int, int]:
    """A stretch around a candidate for Kiwi — the words before and after it, cut at spaces so no word
    is split: enough for its part of speech (시발점 vs 씨발) and for the tag of the token before it."""
    lo = text.rfind(" ", 0, max(0, start - reach)) + 1
    hi = text.find(" ", min(len(text), end + reach))
    return lo, len(text) if hi < 0 else hi


def _merge(windows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for s, e in sorted(windows):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [tuple(w) for w in merged]


@functools.cache
def default_filter(model: bool = False) -> ProfanityFilter:
    """One filter on the shipped lexicon (and classifier) per process (building one compiles the lexicon; Kiwi loads on first need)."""
    return ProfanityFilter(model=model)

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

from llamak.data.hangul import compose_jamo_spans, is_syllable, jamo, keyboard_keys, romanisations

CATEGORIES = ("profanity", "sexual", "slur", "threat")  # the lexicon's; the classifier's hits are "offensive"
_HANGUL = re.compile("[가-힣ㄱ-ㅣ]")
MASKS = "*○●◯◎xX♡♥☆★□■◇◆#@?_"  # characters people type over a letter or syllable
_CLEAR_MASKS = "*○●◯◎♡♥☆★□■◇◆"  # ones that cannot be part of ordinary text next to a syllable
_SEPARATORS = r"(?:[\s\d\W_]|[xX])+"  # what gets typed between split syllables (씨 발, 시1발, 병.신)
_TYPED = r"(?:[^\w\s]|[\d_xX])"  # a separator other than a space
# particles and endings typed after a word in English mode (tlqkf + dk: 시발아), from their Hangul
_KEYED_ENDINGS = "|".join(keyboard_keys(e) for e in ("아", "야", "들", "이", "가", "은", "는", "을", "를", "네", "냐", "이네", "같은", "놈", "년", "새끼"))
ENGLISH_ENDINGS = ("", "s", "es", "ing", "in", "ed", "er", "ers", "y", "ty", "head", "heads", "face", "hole", "holes")


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


# ---------------------------------------------------------------------------- generated disguises


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
            out.append(r"(?<![A-Za-z])(?:" + "|".join(map(re.escape, sorted(whole, key=len, reverse=True))) + r")(?![A-Za-z])")
        if mixed:
            out.append(r"(?<![A-Za-z])(?:" + "|".join(map(re.escape, sorted(mixed, key=len, reverse=True))) + r")")
    if len(syllables) >= 2:
        # split, the word standing alone (not 질병 신고, 3시 발표): every syllable apart (씨 발, 개 새 끼), or
        # something other than a space typed inside (시1발, 병.신, 죽1여버린다); not one space (개 새끼, a puppy)
        n = len(syllables)
        out.append(r"(?<![\w])" + r"\s+".join(syllables) + r"(?![가-힣])")
        typed_inside = rf"(?=(?:[가-힣](?:{_SEPARATORS})?){{0,{n - 2}}}[가-힣]\s*{_TYPED})"
        out.append(r"(?<![\w])" + typed_inside + f"(?:{_SEPARATORS})?".join(syllables))
    if len(syllables) >= 2:  # one syllable masked (병○, 개○끼): not the first; X and ? only in longer words
        for i in range(1, len(syllables)):
            mask = "[" + re.escape(MASKS if len(syllables) >= 3 else _CLEAR_MASKS) + "]"
            out.append(r"(?<![가-힣])" + "".join(mask if j == i else s for j, s in enumerate(syllables)))
    if len(syllables) >= 3:  # initial consonants (한남충 → ㅎㄴㅊ); two-syllable ones are too ambiguous (ㅈㅈ: GG)
        out.append(r"(?<![ㄱ-ㅎ])" + "".join(jamo(s)[0] for s in syllables) + r"(?![ㄱ-ㅎ])")
    return out


def english_masked(word: str) -> str:
    """A word with masked letters (sh*t, f**k, c#nt): the first letter kept, any other maskable."""
    mask = "[" + re.escape("*#@_%$!") + "]"
    letters = "".join(f"(?:{re.escape(c)}|{mask})" for c in word[1:])
    endings = "|".join(e for e in ENGLISH_ENDINGS if e)
    return rf"\b(?=[A-Za-z]*[*#@_%$!]){re.escape(word[0])}{letters}(?:{endings})?(?![\w*#@_%$!])"


# ---------------------------------------------------------------------------- the second view

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


# ---------------------------------------------------------------------------- RE2 prefilter


# Python's \w, \W, \d are Unicode-aware (Hangul is a word character); RE2's are ASCII-only, and an
# ASCII \W would match every Hangul syllable, which multiplies the states of the automaton.
_RE2_OUTSIDE = {"w": r"[\p{L}\p{N}_]", "W": r"[^\p{L}\p{N}_]", "d": r"\p{Nd}", "s": r"[\s\x{a0}\x{3000}]"}
_RE2_INSIDE = {"w": r"\p{L}\p{N}_", "d": r"\p{Nd}", "s": r"\s\x{a0}\x{3000}"}


def re2_superset(pattern: str) -> str:
    """`pattern` for RE2: lookarounds and \b (which RE2 lacks) dropped, so it matches wherever
    `pattern` does (and maybe more: it is a prefilter), with Unicode-aware character classes."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            letter = pattern[i + 1]
            if letter != "b":
                out.append(_RE2_OUTSIDE.get(letter, pattern[i : i + 2]))
            i += 2
        elif c == "[":
            end = _class_end(pattern, i)
            out.append(_re2_class(pattern[i + 1 : end]))
            i = end + 1
        elif pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(pattern, i)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _class_end(pattern: str, start: int) -> int:
    """Index of the `]` closing the class that opens at `start`."""
    i = start + 1 + (pattern[start + 1 : start + 2] == "^")
    i += pattern[i] == "]"  # a leading ] is a member
    while pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i


def _re2_class(body: str) -> str:
    negated = body.startswith("^")
    members, i, non_word = [], int(negated), False
    while i < len(body):
        if body[i] == "\\":
            letter = body[i + 1]
            if letter == "W" and not negated:
                non_word = True
            else:
                members.append(_RE2_INSIDE.get(letter, body[i : i + 2]))
            i += 2
        else:
            members.append(body[i])
            i += 1
    rest = "".join(members)
    if non_word:  # [\s\d\W_] = every non-word character, or one of the rest
        return rf"(?:[^\p{{L}}\p{{N}}_]|[{rest}])" if rest else r"[^\p{L}\p{N}_]"
    return f"[{'^' if negated else ''}{rest}]"


def alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of a pattern (a|b(c|d) → a, b(c|d)): each is a rule of its own, so
    each lands in the RE2 set of its script and runs only when it can match."""
    parts, depth, in_class, i, last = [], 0, False, 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            i += 2 if pattern[i + 1 : i + 2] in ("]", "^") else 1
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[last:i])
            last = i + 1
        i += 1
    return [*parts, pattern[last:]]


def _group_end(pattern: str, start: int) -> int:
    depth, i, in_class = 0, start, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError(f"unbalanced group in {pattern!r}")


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

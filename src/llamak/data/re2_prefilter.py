"""Python regular expressions as RE2 prefilters: what RE2 lacks dropped, Unicode classes kept.

The profanity filter runs ~700 rules; Python's `re` would scan a text once per rule. An RE2 set
(google-re2: one automaton, linear time) scans once for all of them and says which rules *could*
match; only those run in Python. For that, each rule is translated into a superset RE2 accepts:
lookarounds, \\b and backreferences removed (RE2 has none of them), and `\\w \\W \\d \\s` made Unicode-aware as in
Python (RE2's are ASCII-only: its `\\W` would match every Hangul syllable).
"""

from __future__ import annotations

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
            if letter.isdigit():  # a backreference (RE2 has none): any text is a superset of it
                out.append("(?s:.*)")
            elif letter != "b":
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

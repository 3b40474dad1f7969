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
    cuts = [i for i, c, depth in _structure(pattern) if c == "|" and depth == 0]
    return [pattern[start + 1 : end] for start, end in zip([-1, *cuts], [*cuts, len(pattern)])]


def _group_end(pattern: str, start: int) -> int:
    """Index just after the `)` closing the group that opens at `start`."""
    return next(i + 1 for i, c, depth in _structure(pattern, start) if c == ")" and depth == 0)


def _structure(pattern: str, start: int = 0):
    """(index, character, depth) of each `(`, `)` and `|` from `start`, skipping escapes and character
    classes; depth counts the groups around the character (a parenthesis is outside its own group)."""
    depth, i = 0, start
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if c == "[":
            i = _class_end(pattern, i) + 1
            continue
        if c == ")":
            depth -= 1
        if c in "()|":
            yield i, c, depth
        if c == "(":
            depth += 1
        i += 1

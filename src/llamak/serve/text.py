"""Text that streams safely: incremental detokenization and stop strings.

A byte-level BPE (Llama-3's) spells one Hangul syllable with up to three tokens, so decoding each new
token alone would emit broken UTF-8 (U+FFFD) mid-syllable — a known failure class of servers. We
decode the whole completion each step and emit only the new, settled text: nothing while the tail is
an incomplete character, and nothing that might still turn out to be the start of a stop string.
What a stream emits therefore concatenates to exactly what the non-streamed response returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REPLACEMENT = "\ufffd"


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of `text` could still begin a stop string (so must not be emitted)."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def find_stop(text: str, stops: list[str]) -> int | None:
    """Index where the earliest stop string starts, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


@dataclass
class Detokenizer:
    """Turns generated token ids into settled text deltas for one completion."""

    tokenizer: object
    stops: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the final text already handed out
    text: str = ""
    stopped: bool = False  # a stop string was found: the text is final

    def add(self, token_id: int) -> str:
        """Take one generated token; return the new text that is safe to emit (may be empty)."""
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = find_stop(self.text, self.stops)
        if cut is not None:
            self.text, self.stopped = self.text[:cut], True
            return self.flush()
        if self.text.endswith(REPLACEMENT):  # an incomplete multi-byte character: wait for its next byte
            return ""
        end = len(self.text) - held_back(self.text, self.stops)
        return self._emit(end)

    def flush(self) -> str:
        """Everything not yet emitted (at the end of generation)."""
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        if end <= self.emitted:
            return ""
        delta, self.emitted = self.text[self.emitted : end], end
        return delta

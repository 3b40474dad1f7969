"""Text that streams safely: incremental detokenization and stop strings.

A byte-level BPE (Llama-3's) spells one Hangul syllable with up to three tokens, so decoding each new
token alone would emit broken UTF-8 (U+FFFD) mid-syllable — a known failure class of servers. We
decode a short window of recent tokens (the way vLLM and TGI do: the tokens before the newest ones
give the spacing context) and keep the new text only once it ends in a complete character; then
hold back anything that might still turn out to be the start of a stop string. Each token costs a
decode of a few tokens, so a stream is linear in the answer's length, and what it emits
concatenates to exactly what the non-streamed response returns.
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
    prefix: int = 0  # ids[prefix:read] were decoded already: the context that spaces the next tokens
    read: int = 0  # ids[read:] have not produced text yet (an incomplete character)
    pending: str = ""  # decoded text not yet emitted (it might begin a stop string)
    stopped: bool = False  # a stop string was found: the text is final

    def add(self, token_id: int) -> str:
        """Take one generated token; return the new text that is safe to emit (may be empty)."""
        self.ids.append(token_id)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        after = self.tokenizer.decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith(REPLACEMENT):  # nothing new, or a character still missing bytes
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        self.pending += after[len(before) :]
        cut = find_stop(self.pending, self.stops)
        if cut is not None:
            self.pending, self.stopped = self.pending[:cut], True
            return self.flush()
        keep = held_back(self.pending, self.stops)  # pending stays shorter than the longest stop string
        delta, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep :]
        return delta

    def flush(self) -> str:
        """Everything not yet emitted (at the end of generation)."""
        delta, self.pending = self.pending, ""
        return delta

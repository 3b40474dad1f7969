"""Korean vocabulary expansion of a byte-level BPE tokenizer, and the matching embedding surgery.

`llamak vocab expand MODEL --corpus … --add N --out DIR`:

1. **Learn** N Korean tokens with the `tokenizers` BPE trainer — not from bytes, but continuing the
   model's own BPE: every Korean word of the corpus (a pre-token that is only Hangul syllables, with
   its leading space) is first split by the *old* tokenizer, each old token becomes one symbol, and
   the trainer learns merges of those symbols. So each learned merge joins two tokens the old
   tokenizer really produces next to each other, and every intermediate token exists.
2. **Add** them as BPE merges ranked after all old merges, with ids after all old ids (special
   tokens included): every existing id keeps its meaning. A merge is kept only if its bytes can
   only occur inside Hangul text (a Hangul lead byte and, where the lead byte is shared with other
   scripts, its second byte), so text without Hangul tokenises byte for byte as before — old merges
   always fire first, and a new merge cannot match bytes of any other script. New tokens the
   merged tokenizer would never produce as one piece are dropped (checked by tokenising each).
3. **Grow** `embed_tokens`/`lm_head` by the new rows, streamed like the other surgery commands.
   A new input row is the mean of the input rows of the old pieces the token replaces (EEVE, Kim et
   al. 2024, arXiv 2402.14714; Hewitt 2021): the model starts by reading the new token as roughly
   the sequence it used to see. A new output row is the output row of the token's *first* old
   piece (EEVE's choice): the model's score for emitting the word starts as its score for starting
   it, so the new tokens are predicted where the old model would begin that word; the mean of the
   output rows would score every new token as an unlikely average and the model would first
   have to learn to produce them at all. With tied embeddings (SmolLM2) one row serves both: the mean.
   Old rows are copied byte for byte, so on text without Hangul the logits of every old id are
   unchanged; only the new tokens take some probability mass (on English, with SmolLM2 and 6,349
   new tokens: 0.003–0.03 % on average, README).

The map of every new id to the old ids it replaces is written to `vocab_map.json` beside the
weights (it travels with the model's side files) and summarised in `llamak.json`.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llamak.checkpoint import VOCAB_MAP_FILE, ModelDir, copy_side_files, write_config
from llamak.errors import CheckpointError, LlamakError
from llamak.files import expand_globs, read_jsonl
from llamak.lineage import atomic_output, make_lineage, write_lineage
from llamak.surgery.plan import Compute, Copy, PlannedTensor, execute
from llamak.surgery.tensors import DEFAULT_SHARD_BYTES, TensorSpec

log = logging.getLogger("llamak")

EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"
KOREAN_WORD = re.compile(r"^ ?[\uac00-\ud7a3]+$")  # a pre-token of Hangul syllables, maybe after a space
HANGUL = re.compile(r"[\uac00-\ud7a3]")
SYMBOL_BASE = 0xF0000  # supplementary private-use planes: one symbol per old token, never in text


@functools.cache
def byte_to_char() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte shown as a printable character (as in tokenizer.json)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + k) for k, b in enumerate(shifted)}}


@functools.cache
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def token_bytes(token: str) -> bytes:
    """The bytes a byte-level BPE token stands for ('Ġíķľ' → b' \\xed\\x95\\x9c')."""
    table = char_to_byte()
    return bytes(table[c] for c in token)


def only_in_hangul(data: bytes) -> bool:
    """Whether these bytes can only occur inside UTF-8 Hangul syllables (U+AC00–U+D7FF).

    Lead bytes EB and EC start nothing but Hangul; EA (from U+AC00: second byte ≥ B0) and ED (to
    U+D7FF: second byte ≤ 9F) are shared with other scripts, so their second byte must be present.
    """
    for k, b in enumerate(data):
        if b in (0xEB, 0xEC):
            return True
        nxt = data[k + 1] if k + 1 < len(data) else None
        if nxt is not None and ((b == 0xEA and 0xB0 <= nxt <= 0xBF) or (b == 0xED and 0x80 <= nxt <= 0x9F)):
            return True
    return False


# --------------------------------------------------------------------------- the tokenizer


@dataclass
class ByteLevelBPE:
    """A byte-level BPE `tokenizer.json` as data: the pieces this module reads and extends."""

    raw: dict

    @classmethod
    def load(cls, model_dir: Path) -> ByteLevelBPE:
        path = Path(model_dir) / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"{path}: no tokenizer.json; vocabulary expansion needs a fast (tokenizers) BPE tokenizer")
        raw = json.loads(path.read_text(encoding="utf-8"))
        model = raw.get("model") or {}
        if model.get("type") != "BPE" or not _is_byte_level(raw):
            raise CheckpointError(
                f"{path}: a {model.get('type')} tokenizer without a ByteLevel pre-tokenizer; vocabulary expansion "
                "supports byte-level BPE (Llama-3, SmolLM2, Qwen, GPT-2 style)"
            )
        return cls(raw)

    @property
    def vocab(self) -> dict[str, int]:
        return self.raw["model"]["vocab"]

    @property
    def merges(self) -> list:
        return self.raw["model"]["merges"]

    def next_id(self) -> int:
        """First free id: after the BPE vocabulary and every added (special) token."""
        ids = [*self.vocab.values(), *(t["id"] for t in self.raw.get("added_tokens") or [])]
        return max(ids) + 1

    def backend(self):
        from tokenizers import Tokenizer

        return Tokenizer.from_str(json.dumps(self.raw))

    def extended(self, new_merges: list[tuple[str, str]], first_id: int) -> ByteLevelBPE:
        """A copy with `new_merges` ranked after the old ones and their results as ids from `first_id`."""
        raw = json.loads(json.dumps(self.raw))
        vocab, merges = raw["model"]["vocab"], raw["model"]["merges"]
        as_strings = bool(merges) and isinstance(merges[0], str)
        # tokenizers gives added (special) tokens missing from the model's vocabulary fresh ids after
        # it on load; listing them there at their ids keeps them where they are (Llama-3's 128000+).
        for added in raw.get("added_tokens") or []:
            vocab.setdefault(added["content"], added["id"])
        for k, (left, right) in enumerate(new_merges):
            vocab[left + right] = first_id + k
            merges.append(f"{left} {right}" if as_strings else [left, right])
        return ByteLevelBPE(raw)


def _is_byte_level(raw: dict) -> bool:
    def walk(node):
        if isinstance(node, dict):
            return node.get("type") == "ByteLevel" or any(walk(v) for v in node.get("pretokenizers") or [])
        return False

    return walk(raw.get("pre_tokenizer"))


def merge_pair(merge) -> tuple[str, str]:
    left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
    return left, right


# --------------------------------------------------------------------------- learning the tokens


def korean_words(texts, backend) -> collections.Counter:
    """Pre-tokens (byte-level strings) made only of Hangul syllables, with their counts."""
    words: collections.Counter = collections.Counter()
    for text in texts:
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text):
            if KOREAN_WORD.match(token_bytes(piece).decode("utf-8", "replace")):
                words[piece] += 1
    return words


def learn_merges(words: collections.Counter, backend, candidates: int, min_frequency: int) -> list[tuple[str, str]]:
    """Merges of old tokens learned by the `tokenizers` BPE trainer, most frequent first.

    Each word is written as its old tokens, one private-use character per distinct token, so the
    trainer continues the old BPE instead of starting from bytes.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    symbol_of: dict[str, str] = {}
    transcribed: collections.Counter = collections.Counter()
    for word, count in words.items():
        pieces = [t.value for t in backend.model.tokenize(word)]
        transcribed["".join(symbol_of.setdefault(p, chr(SYMBOL_BASE + len(symbol_of))) for p in pieces)] += count
    if not transcribed:
        return []
    token_of = {s: p for p, s in symbol_of.items()}
    trainer_model = Tokenizer(models.BPE())
    trainer_model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=len(symbol_of) + candidates,
        min_frequency=min_frequency,
        initial_alphabet=list(symbol_of.values()),
        limit_alphabet=len(symbol_of),
        show_progress=False,
    )
    # The trainer counts words itself: each transcribed word, repeated as often as it occurs.
    trainer_model.train_from_iterator((" ".join([w] * c) for w, c in transcribed.items()), trainer)
    learned = json.loads(trainer_model.to_str())["model"]["merges"]
    return [tuple("".join(token_of[s] for s in side) for side in merge_pair(m)) for m in learned]


def select_merges(learned: list[tuple[str, str]], known: set[str], add: int) -> list[tuple[str, str]]:
    """The first `add` learned merges that make a new token of Hangul-only bytes from known tokens."""
    known = set(known)
    chosen = []
    for left, right in learned:
        token = left + right
        if left in known and right in known and token not in known and only_in_hangul(token_bytes(token)):
            chosen.append((left, right))
            known.add(token)
            if len(chosen) == add:
                break
    return chosen


MAX_ROUNDS = 16


def learn_korean_merges(words: collections.Counter, old: ByteLevelBPE, add: int, min_frequency: int, first_id: int) -> list[tuple[str, str]]:
    """Up to `add` Hangul-only merges, learned in rounds.

    The trainer may rank a merge of two continuation bytes first (frequent in every syllable, but
    not Hangul-only, so refused) and build later merges on it; each round therefore trains again on
    the words as the tokenizer extended so far splits them, until `add` merges are kept or a round
    finds none. (Llama-3 spells most syllables whole and needs one round; SmolLM2 several.)
    """
    merges: list[tuple[str, str]] = []
    for _ in range(MAX_ROUNDS):
        backend = old.extended(merges, first_id).backend()
        wanted = add - len(merges)
        learned = learn_merges(words, backend, 2 * wanted, min_frequency)
        fresh = select_merges(learned, set(old.vocab) | {left + right for left, right in merges}, wanted)
        if not fresh:
            break
        merges = reachable_merges(old, merges + fresh, first_id)
        if len(merges) >= add:
            break
    return merges


def reachable_merges(old: ByteLevelBPE, merges: list[tuple[str, str]], first_id: int) -> list[tuple[str, str]]:
    """Drop merges whose token the extended tokenizer never produces whole, until all are produced."""
    while True:
        backend = old.extended(merges, first_id).backend()
        kept = [m for m in merges if [t.value for t in backend.model.tokenize(m[0] + m[1])] == [m[0] + m[1]]]
        if len(kept) == len(merges):
            return merges
        merges = kept


# --------------------------------------------------------------------------- embeddings


def grow_rows(weight: torch.Tensor, pieces: list[list[int]], rows: int, how: str) -> torch.Tensor:
    """`weight` with `rows` rows: the old rows unchanged, then one row per new token made from the
    rows of its old pieces (`mean` or `first`); rows in between (if any) are zero."""
    out = torch.zeros((rows, weight.shape[1]), dtype=weight.dtype)
    out[: weight.shape[0]] = weight
    first = rows - len(pieces)
    for k, ids in enumerate(pieces):
        source = weight[ids[0]].float() if how == "first" else weight[ids].float().mean(0)
        out[first + k] = source.to(weight.dtype)
    return out


@dataclass
class VocabResult:
    out: Path
    added: int
    first_id: int
    rows: int
    korean_words: int
    korean_chars_per_token: dict[str, float]  # on a sample of the corpus' Korean documents, before/after
    unchanged_checked: int  # corpus documents without Hangul checked to tokenise exactly as before
    notes: list[str] = field(default_factory=list)


def corpus_texts(corpus: list[str], text_field: str = "text"):
    for path in expand_globs(corpus, "--corpus"):
        for row in read_jsonl(path, text_field):
            if isinstance(row[text_field], str):
                yield row[text_field]


SAMPLE_DOCUMENTS = 200


def sampled(texts, samples: dict[str, list[str]]):
    """Pass texts through, keeping the first documents with and without Hangul for the checks."""
    for text in texts:
        group = samples["ko" if HANGUL.search(text) else "other"]
        if len(group) < SAMPLE_DOCUMENTS:
            group.append(text)
        yield text


def chars_per_token(backend, texts: list[str]) -> float | None:
    tokens = sum(len(backend.encode(t, add_special_tokens=False).ids) for t in texts)
    return round(sum(map(len, texts)) / tokens, 4) if tokens else None


def expand_vocabulary(
    model: str | Path,
    corpus: list[str],
    out: str | Path,
    add: int,
    min_frequency: int = 2,
    text_field: str = "text",
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    progress: bool = True,
) -> VocabResult:
    """Learn up to `add` Korean tokens from `corpus`, add them to `model`'s tokenizer and embeddings."""
    if add < 1:
        raise LlamakError(f"--add {add}: give the number of tokens to add (≥ 1)")
    src = ModelDir.open(model, role="model")
    old = ByteLevelBPE.load(src.path)
    backend = old.backend()
    samples: dict[str, list[str]] = {"ko": [], "other": []}
    words = korean_words(sampled(corpus_texts(corpus, text_field), samples), backend)
    if not words:
        raise LlamakError(f"--corpus {' '.join(corpus)}: no Korean words found in field {text_field!r}")
    first_id = max(old.next_id(), int(src.config.get("vocab_size") or 0))
    merges = learn_korean_merges(words, old, add, min_frequency, first_id)
    notes = []
    if len(merges) < add:
        notes.append(f"the corpus yields {len(merges)} Korean tokens (asked for {add}): {sum(words.values()):,} Korean words, "
                     f"merges seen fewer than {min_frequency} times are not learned")
        log.warning(notes[-1])
    if not merges:
        raise LlamakError("no Korean token could be learned from the corpus (too small? lower --min-frequency)")
    new = old.extended(merges, first_id)
    new_backend = new.backend()
    changed = [t for t in samples["other"] if backend.encode(t).ids != new_backend.encode(t).ids]
    if changed:  # cannot happen by construction; checked so that a broken tokenizer is never written
        raise LlamakError(f"internal error: the extended tokenizer splits text without Hangul differently: {changed[0][:60]!r}")
    density = {"before": chars_per_token(backend, samples["ko"]), "after": chars_per_token(new_backend, samples["ko"])}
    pieces = [[backend.token_to_id(t.value) for t in backend.model.tokenize(left + right)] for left, right in merges]
    rows = first_id + len(merges)
    tied = bool(src.config.get("tie_word_embeddings"))

    with src.reader() as reader:
        if EMBED not in reader:
            raise CheckpointError(f"{src.path}: no tensor {EMBED}; vocabulary expansion needs Llama-style embeddings")
        plan = []
        for name in reader.names():
            spec = reader.spec(name)
            if name in (EMBED, LM_HEAD):
                if spec.shape[0] > first_id:
                    raise CheckpointError(f"{src.path}: {name} has {spec.shape[0]} rows, more than the first new id {first_id}")
                how = "first" if name == LM_HEAD else "mean"
                grown = TensorSpec(name, spec.dtype, (rows, *spec.shape[1:]))
                plan.append(PlannedTensor(grown, Compute(grow_rows, (("model", name),), {"pieces": pieces, "rows": rows, "how": how})))
            else:
                plan.append(PlannedTensor(spec, Copy("model", name)))
        with atomic_output(Path(out), overwrite) as tmp:
            execute(plan, {"model": reader}, tmp, max_shard_bytes, desc="vocab", progress=progress)
            copy_side_files(src.path, tmp)
            (tmp / "tokenizer.json").write_text(json.dumps(new.raw, ensure_ascii=False), encoding="utf-8")
            write_config(tmp, {**src.config, "vocab_size": rows})
            vocab_map = {
                "original_rows": int(reader.spec(EMBED).shape[0]),
                "first_new_id": first_id,
                "added": len(merges),
                "input_init": "mean of the old pieces' input rows",
                "output_init": "tied: the input row" if tied else "the first old piece's output row",
                "tokens": [
                    {"id": first_id + k, "token": left + right, "text": token_bytes(left + right).decode("utf-8", "replace"), "pieces": ids}
                    for k, ((left, right), ids) in enumerate(zip(merges, pieces))
                ],
            }
            (tmp / VOCAB_MAP_FILE).write_text(json.dumps(vocab_map, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            summary = {k: v for k, v in vocab_map.items() if k != "tokens"}
            lineage = make_lineage(
                "vocab",
                {"add": add, "min_frequency": min_frequency, "corpus": list(corpus)},
                {"model": src.path},
                src.layer_map if src.is_expanded else None,
                vocabulary={**summary, "korean_words": sum(words.values()), "map": VOCAB_MAP_FILE,
                            "korean_chars_per_token": density, "unchanged_documents_checked": len(samples["other"])},
                notes=notes,
            )
            write_lineage(tmp, lineage)
    return VocabResult(Path(out), len(merges), first_id, rows, sum(words.values()), density, len(samples["other"]), notes)

"""Rewards for GRPO: plain functions TRL's `GRPOTrainer` calls as `fn(prompts=…, completions=…, **columns)`.

Each returns one float per completion, or None where it does not apply (TRL then leaves that
reward out for that completion). Dataset columns arrive as keyword lists: `answer` (accuracy),
`format` (format), `harmful` (safety). Completions may be strings or chat messages.

| reward | scores | range |
|---|---|---|
| `korean_only` | Korean prompt → share of the answer's letters that are Hangul; CJK ideographs, kana and Latin runs count against it (code, acronyms and lone names allowed) | 0…1, None for non-Korean prompts |
| `format` | the row's `format`: `answer_tags` (one non-empty `<answer>…</answer>`) or `json` (a JSON object) | 0 or 1, None without `format` |
| `accuracy` | the `<answer>` (or the whole reply) vs the row's `answer`: numbers by value, labels by normalised match | 0 or 1, None without `answer` |
| `length` | 1 inside [min_chars, max_chars], falling linearly to 0 outside | 0…1 |
| `no_repetition` | share of distinct character n-grams (whitespace collapsed) | 0…1 |
| `safety` | `harmful` rows: 1 for a refusal; benign rows: 0 for a refusal (over-refusal); 0 for profanity | 0 or 1, None without `harmful` |

Weights and parameters come from the stage: `rewards: {korean_only: 1.0, accuracy: 1.0}`,
`reward_params: {length: {min_chars: 20, max_chars: 300}}`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from fractions import Fraction

HANGUL = re.compile(r"[가-힣ㄱ-ㅎㅏ-ㅣ]")
IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
KANA = re.compile(r"[\u3040-\u30ff]")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'+#.-]*")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)
ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
REFUSAL = re.compile(
    r"죄송|도와\s*드릴\s*수\s*없|도와\s*줄\s*수\s*없|(?:드릴|할|알려\s*드릴|제공할|안내할|답변할)\s*수\s*(?:가\s*)?없|"
    r"하지\s*않겠|거절|불법(?:입니다|이에요|이므로|이라)|"
    r"\bI(?:'m| am) sorry\b|\bI can(?:no|')t\b|\bI cannot\b|\bI won't\b|\bI will not\b|\bI'm not able to\b|"
    r"\bI am not able to\b|\bunable to (?:help|assist|provide)\b|\bcan't help with\b",
    re.I,
)


def text_of(item) -> str:
    """A completion or prompt as text: the last message's content for chats."""
    if isinstance(item, list):
        return str(item[-1].get("content", "")) if item else ""
    return str(item or "")


def hangul_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(bool(HANGUL.match(c)) for c in letters) / len(letters) if letters else 0.0


def allowed_latin(words: list[str], i: int) -> bool:
    """Latin a Korean answer may keep: acronyms/model names with capitals or digits (GPU, Llama3,
    COVID-19), and a lone capitalised word between Korean (a name: 파이썬 Python 버전)."""
    word = words[i]
    if len(word) <= 6 and (word.isupper() or any(ch.isdigit() for ch in word)):
        return True
    return word[:1].isupper() and len(words) == 1


def korean_letter_score(text: str) -> float:
    """Hangul letters / (Hangul + foreign letters); foreign = ideographs and kana (weighted 2) and
    Latin letters outside code and outside the allowed names/terms."""
    text = CODE.sub(" ", text)
    hangul = len(HANGUL.findall(text))
    foreign = 2 * (len(IDEOGRAPH.findall(text)) + len(KANA.findall(text)))
    # Latin runs: consecutive Latin words (separated only by spaces/punctuation) form one run
    for run in re.split(r"[^A-Za-z0-9'+#.\- ,]+", text):
        words = LATIN_WORD.findall(run)
        foreign += sum(len(w) for i, w in enumerate(words) if not allowed_latin(words, i))
    if hangul + foreign == 0:
        return 0.0
    return hangul / (hangul + foreign)


def korean_only(prompts, completions, min_prompt_share: float = 0.3, **_) -> list[float | None]:
    return [
        korean_letter_score(text_of(c)) if hangul_share(text_of(p)) >= min_prompt_share else None
        for p, c in zip(prompts, completions)
    ]


def format_matches(text: str, required: str) -> bool:
    if required == "answer_tags":
        tags = ANSWER_TAG.findall(text)
        return len(tags) == 1 and bool(tags[0].strip())
    if required == "json":
        body = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
        try:
            return isinstance(json.loads(body), dict)
        except ValueError:
            return False
    raise ValueError(f"format reward: unknown format {required!r} (answer_tags or json)")


def format(completions, format=None, **_) -> list[float | None]:  # noqa: A001 — the dataset column's name
    required = format if isinstance(format, list) else [format] * len(completions)
    return [None if r is None else float(format_matches(text_of(c), r)) for c, r in zip(completions, required)]


def normalise(text: str) -> str:
    return re.sub(r"[\s\"'`.,!?。:;()\[\]{}]+", "", text).lower()


def as_number(text: str) -> Fraction | None:
    """The last number in a text (1,234 / 3.5 / -2 / 3/4), exactly."""
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return Fraction(found[-1].replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def answer_matches(text: str, reference: str) -> bool:
    tags = ANSWER_TAG.findall(text)
    candidate = tags[-1] if tags else text
    expected = as_number(reference) if NUMBER.fullmatch(reference.strip()) else None
    if expected is not None:
        return as_number(candidate) == expected
    got, want = normalise(candidate), normalise(reference)
    if not want:
        return False
    # a label, alone or with a short copula/particle after it: "긍정", "긍정입니다", "Positive."
    return got == want or (got.startswith(want) and len(got) - len(want) <= 4)


def accuracy(completions, answer=None, **_) -> list[float | None]:
    answers = answer if isinstance(answer, list) else [answer] * len(completions)
    return [None if a is None else float(answer_matches(text_of(c), str(a))) for c, a in zip(completions, answers)]


def length(completions, min_chars: int = 20, max_chars: int = 400, **_) -> list[float]:
    scores = []
    for c in completions:
        n = len(text_of(c).strip())
        if n < min_chars:
            scores.append(n / min_chars)
        elif n > max_chars:
            scores.append(max(0.0, 1 - (n - max_chars) / max_chars))
        else:
            scores.append(1.0)
    return scores


def distinct_ngram_share(text: str, n: int = 4) -> float:
    chars = re.sub(r"\s+", " ", text.strip())
    grams = [chars[i : i + n] for i in range(len(chars) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def no_repetition(completions, n: int = 4, **_) -> list[float]:
    return [distinct_ngram_share(text_of(c), n) for c in completions]


def is_refusal(text: str) -> bool:
    return bool(REFUSAL.search(text))


def safety(prompts, completions, harmful=None, **_) -> list[float | None]:
    """Refuse harmful requests, help with benign look-alikes, never swear (the data filter's lexicon)."""
    from llamak.data.profanity import default_filter

    profanity = default_filter()
    labels = harmful if isinstance(harmful, list) else [harmful] * len(completions)
    scores = []
    for c, label in zip(completions, labels):
        text = text_of(c)
        if label is None:
            scores.append(None)
        elif profanity.find(text):
            scores.append(0.0)
        else:
            scores.append(float(is_refusal(text) == bool(label)))
    return scores


REWARDS: dict[str, Callable[..., list]] = {
    "korean_only": korean_only,
    "format": format,
    "accuracy": accuracy,
    "length": length,
    "no_repetition": no_repetition,
    "safety": safety,
}


def build_rewards(weights: dict[str, float], params: dict[str, dict] | None = None) -> tuple[list[Callable], list[float]]:
    """Reward functions (named, as TRL logs them by `__name__`) and their weights, from a stage config."""
    params = params or {}
    unknown = sorted((set(weights) | set(params)) - set(REWARDS))
    if unknown:
        from llamak.errors import LlamakError

        raise LlamakError(f"rewards: unknown reward {unknown[0]!r} (known: {', '.join(REWARDS)})")
    funcs = []
    for name in weights:
        fn = REWARDS[name]
        if params.get(name):
            fn = functools.update_wrapper(functools.partial(fn, **params[name]), fn)
        funcs.append(fn)
    return funcs, list(weights.values())

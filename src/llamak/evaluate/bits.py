"""Tokenizer-independent language modelling: bits per character and per byte on held-out text, and
whether the model answers Korean prompts in Korean (`llamak eval MODEL --suite bits`).

Perplexity per token cannot compare models with different vocabularies (an expanded vocabulary
makes tokens longer, so each carries more bits); the text's total negative log-likelihood divided by
its characters (or UTF-8 bytes) can. The log-likelihoods come from lm-eval's `loglikelihood_rolling`
on the engine the other suites use (HF or vLLM), over the held-out paragraphs in
`resources/eval/data/heldout_{ko,en}.jsonl` (topics absent from the bundled training data). The
suite also reports each language's characters per token, and the share of answers to the Korean
questions of ko-mini whose letters are mostly Hangul.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from llamak.evaluate.harness import RESOURCES

KOREAN_ANSWER = 0.5  # an answer is Korean when over half of its letters are Hangul


def heldout_texts(lang: str, limit: int | None = None) -> list[str]:
    path = RESOURCES / "data" / f"heldout_{lang}.jsonl"
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return texts[:limit] if limit else texts


def bits(total_loglikelihood: float, units: int) -> float:
    """Bits per unit from a total natural-log likelihood."""
    return -total_loglikelihood / math.log(2) / units


def language_bits(lm, tokenizer, texts: list[str]) -> dict:
    from lm_eval.api.instance import Instance

    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=k) for k, t in enumerate(texts)]
    # lm-eval puts its prefix token (BOS) before the first window itself; a tokenizer that adds BOS
    # too (Llama-3's) would make the text start with a second, scored BOS: encode without it
    previous = lm.add_bos_token
    lm.add_bos_token = False
    try:
        total = sum(lm.loglikelihood_rolling(requests, disable_tqdm=True))
    finally:
        lm.add_bos_token = previous
    chars, nbytes = sum(map(len, texts)), sum(len(t.encode("utf-8")) for t in texts)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return {"bits_per_char": bits(total, chars), "bits_per_byte": bits(total, nbytes), "chars_per_token": chars / tokens,
            "documents": len(texts), "chars": chars, "tokens": tokens}


def korean_answer_share(generator, limit: int | None, seed: int, max_new_tokens: int) -> dict:
    from llamak.generation import Sampling
    from llamak.train.rewards import hangul_share

    rows = [json.loads(line) for line in (RESOURCES / "data" / "ko_mini_gen.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:limit] if limit else rows
    prompts = [[{"role": "user", "content": (r["context"] + "\n\n" if r["context"] else "") + r["question"]}] for r in rows]
    answers = generator.generate(prompts, Sampling(max_new_tokens=max_new_tokens, seed=seed), desc="korean answers", progress=False)
    korean = [hangul_share(a) > KOREAN_ANSWER for a in answers]
    return {"share": sum(korean) / len(korean), "prompts": len(korean), "examples": answers[:3]}


def run_bits_suite(lm, generator, langs: list[str], limit: int | None, seed: int, max_new_tokens: int, out_dir: Path | None = None) -> dict:
    per_lang = {lang: language_bits(lm, generator.tokenizer, heldout_texts(lang, limit)) for lang in langs}
    tasks = {}
    for lang, r in per_lang.items():
        tasks[f"{lang}_bits_per_char"] = {"metric": "bits_per_char", "score": r["bits_per_char"], "n": r["documents"]}
        tasks[f"{lang}_bits_per_byte"] = {"metric": "bits_per_byte", "score": r["bits_per_byte"], "n": r["documents"]}
        tasks[f"{lang}_chars_per_token"] = {"metric": "chars_per_token", "score": r["chars_per_token"], "n": r["documents"]}
    answers = korean_answer_share(generator, limit, seed, max_new_tokens) if "ko" in langs else None
    if answers is not None:
        tasks["ko_answers_in_korean"] = {"metric": "share", "score": answers["share"], "n": answers["prompts"]}
    result = {"score": sum(r["bits_per_char"] for r in per_lang.values()) / len(per_lang), "averaging": "mean bits/char over languages",
              "languages": per_lang, "korean_answers": answers, "tasks": tasks}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "bits.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return result

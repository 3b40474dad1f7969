"""LongPO pair synthesis by the model itself (`llamak longpo synth DOCS… --model M --out DATA`).

For each long document (ALGORITHMS.md §3.2, at lengths set by parameters):
1. split it into paragraphs (blank lines; long paragraphs by sentences) and group them greedily into
   chunks of `chunk_tokens` (min, max); the long context x_L is the chunks joined, up to `long_tokens`;
2. for up to `turns` chunks x_S: ask the model for `questions` numbered questions about x_S
   (sampled), parse them (malformed output is dropped), pick one at random;
3. chosen = the model's answer seeing x_S + question; rejected = its answer seeing x_L + question;
4. drop pairs where an answer refuses, is shorter than `min_answer_chars`, loops (distinct
   character 4-grams < 0.5), or where both answers are the same.
Prompts follow the document's language (Korean when most letters are Hangul). Output: `pairs.jsonl`
(one record per document: long context + turns of chunk/question/chosen/rejected) and
`synth.json` (counts, drops by reason, settings).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llamak.generation import Sampling
from llamak.train.rewards import distinct_ngram_share, hangul_share, is_refusal

QUESTION_PROMPT = {
    "en": "Context:\n{chunk}\n\nWrite {n} different questions about the context above that need a careful reading to answer. "
    "Number them '1:' to '{n}:', one per line, and write nothing else.",
    "ko": "맥락:\n{chunk}\n\n위 맥락을 꼼꼼히 읽어야 답할 수 있는 서로 다른 질문 {n}개를 쓰세요. "
    "각 줄에 '1:'부터 '{n}:'까지 번호를 붙여 한 줄에 하나씩 쓰고, 다른 말은 쓰지 마세요.",
}
ANSWER_PROMPT = {
    "en": "{context}\n\n{question}",
    "ko": "{context}\n\n{question}",
}
ANCHORS = {
    "en": ["As described in the text above, ", "Based on the document, ", "According to the preceding text, "],
    "ko": ["앞의 글에 따르면, ", "위 문서를 바탕으로 답하세요. ", "앞에서 설명한 내용에 비추어 볼 때, "],
}
NUMBERED = re.compile(r"^\s*(\d+)\s*[:.)]\s*(.+?)\s*$")


@dataclass
class SynthSettings:
    chunk_tokens: tuple[int, int] = (64, 256)
    long_tokens: int = 1024
    turns: int = 2
    questions: int = 4
    min_answer_chars: int = 10
    max_new_tokens: int = 128
    seed: int = 0


@dataclass
class SynthStats:
    documents: int = 0
    records: int = 0
    pairs: int = 0
    dropped: Counter = field(default_factory=Counter)


def language(text: str) -> str:
    return "ko" if hangul_share(text) >= 0.3 else "en"


def paragraphs(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"\n\s*\n+", text) if p.strip()]
    return parts


def chunk_document(text: str, count_tokens, min_tokens: int, max_tokens: int) -> list[str]:
    """Paragraphs grouped greedily into chunks of min..max tokens; a paragraph over max is split by
    sentences; a final chunk under min is dropped (as the authors drop out-of-range chunks)."""
    pieces = []
    for p in paragraphs(text):
        if count_tokens(p) <= max_tokens:
            pieces.append(p)
        else:
            pieces += [s for s in re.split(r"(?<=[.!?。])\s+|(?<=다\.)\s*", p) if s.strip()]
    chunks, current = [], []
    for piece in pieces:
        candidate = "\n\n".join(current + [piece])
        if current and count_tokens(candidate) > max_tokens:
            chunks.append("\n\n".join(current))
            current = [piece]
        else:
            current.append(piece)
    if current:
        chunks.append("\n\n".join(current))
    return [c for c in chunks if min_tokens <= count_tokens(c) <= max_tokens]


def parse_questions(output: str, n: int) -> list[str] | None:
    """The numbered questions 1..n of a generation, or None when it is not exactly that."""
    found = {}
    for line in output.splitlines():
        m = NUMBERED.match(line)
        if m and 1 <= int(m[1]) <= n and m[2].strip():
            found.setdefault(int(m[1]), m[2].strip())
    return [found[i] for i in range(1, n + 1)] if len(found) == n else None


def answer_problem(answer: str, min_chars: int) -> str | None:
    if is_refusal(answer):
        return "refusal"
    if len(answer.strip()) < min_chars:
        return "too_short"
    if distinct_ngram_share(answer) < 0.5:
        return "repetitive"
    return None


def synthesize(documents: list[str], generator, settings: SynthSettings = SynthSettings(), progress: bool = True) -> tuple[list[dict], SynthStats]:
    """Records of LongPO pairs made by `generator` (see `llamak.generation`) from `documents`."""
    rng = random.Random(settings.seed)
    stats = SynthStats(documents=len(documents))
    plans = []  # (document index, language, long context, chunks used)
    for d, text in enumerate(documents):
        chunks = chunk_document(text, generator.count_tokens, *settings.chunk_tokens)
        used, total = [], 0
        for c in chunks:
            size = generator.count_tokens(c)
            if total + size > settings.long_tokens:
                break
            used.append(c)
            total += size
        if len(used) < 2:  # no long context beyond one chunk: nothing to prefer
            stats.dropped["document_too_short"] += 1
            continue
        lang = language(text)
        plans.append((d, lang, "\n\n\n".join(used), rng.sample(used, min(settings.turns, len(used)))))

    asks = [[{"role": "user", "content": QUESTION_PROMPT[lang].format(chunk=c, n=settings.questions)}] for _, lang, _, cs in plans for c in cs]
    outputs = iter(generator.generate(asks, Sampling(settings.max_new_tokens, 0.7, 0.9, settings.seed), desc="questions", progress=progress))
    turns = []  # (plan index, chunk, question)
    for p, (_, lang, _, cs) in enumerate(plans):
        for c in cs:
            questions = parse_questions(next(outputs), settings.questions)
            if questions is None:
                stats.dropped["malformed_questions"] += 1
                continue
            turns.append((p, c, rng.choice(ANCHORS[lang]) + rng.choice(questions)))

    def ask(context: str, question: str, lang: str) -> list[dict]:
        return [{"role": "user", "content": ANSWER_PROMPT[lang].format(context=context, question=question)}]

    sampling = Sampling(settings.max_new_tokens, 1.0, 1.0, settings.seed)
    chosen = generator.generate([ask(c, q, plans[p][1]) for p, c, q in turns], sampling, desc="short answers", progress=progress)
    rejected = generator.generate([ask(plans[p][2], q, plans[p][1]) for p, c, q in turns], sampling, desc="long answers", progress=progress)
    by_plan: dict[int, list[dict]] = {}
    for (p, c, q), yw, yl in zip(turns, chosen, rejected):
        problem = answer_problem(yw, settings.min_answer_chars) or answer_problem(yl, settings.min_answer_chars)
        if problem is None and yw.strip() == yl.strip():
            problem = "identical"
        if problem:
            stats.dropped[problem] += 1
            continue
        by_plan.setdefault(p, []).append({"chunk": c, "question": q, "chosen": yw.strip(), "rejected": yl.strip()})
    records = [{"document": plans[p][0], "lang": plans[p][1], "long_context": plans[p][2], "turns": t} for p, t in sorted(by_plan.items())]
    stats.records, stats.pairs = len(records), sum(len(r["turns"]) for r in records)
    return records, stats


def read_documents(patterns: list[str]) -> list[str]:
    """Long documents: each .txt file is one; each row of a .jsonl(.gz) file with `text` is one."""
    from llamak.train.common import expand_globs, read_jsonl

    docs = []
    for path in expand_globs(patterns, "documents"):
        if path.suffix == ".txt":
            docs.append(path.read_text(encoding="utf-8"))
        else:
            docs += [str(row["text"]) for row in read_jsonl(path, "text")]
    return docs


def write_synthesis(records: list[dict], stats: SynthStats, settings: SynthSettings, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = {"documents": stats.documents, "records": stats.records, "pairs": stats.pairs,
               "dropped": dict(stats.dropped), "settings": {k: v for k, v in vars(settings).items()}}
    (out / "synth.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

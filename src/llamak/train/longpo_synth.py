"""LongPO pair synthesis by the model itself (`llamak longpo synth DOCS… --model M --out DATA`).

For each long document (ALGORITHMS.md §3.2, at lengths set by parameters):
1. split it into paragraphs (blank lines; long paragraphs by sentences) and group them greedily into
   chunks of `chunk_tokens` (min, max); the long context x_L is the chunks joined, up to `long_tokens`;
2. for up to `turns` chunks x_S: ask the model for `questions` numbered questions about x_S
   (sampled), parse them (malformed output is dropped), pick one at random. Models too small to
   write questions (the tiny recipe's) can use template questions about terms typical of x_S
   (`question_source: template`, or `auto`: templates only where the model's output is malformed);
3. chosen = the model's answer seeing x_S + question; rejected = its answer seeing x_L + question;
4. drop pairs where an answer refuses, is shorter than `min_answer_chars`, loops (share of distinct
   character 4-grams < `min_distinct_4grams`), or where both answers are the same.
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
TEMPLATES = {
    "en": ["What does the text say about {term}?", "Explain what the document tells us about {term}.",
           "Summarise the part of the text that concerns {term}."],
    "ko": ["글에서 {term}에 대해 무엇이라고 하나요?", "문서가 {term}에 관해 알려 주는 내용을 설명하세요.",
           "글에서 {term}에 관한 부분을 요약하세요."],
}
QUESTION_SOURCES = ("model", "template", "auto")
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
    question_source: str = "model"  # model | template | auto (templates where the model's are malformed)
    min_distinct_4grams: float = 0.5

    def __post_init__(self):
        if self.question_source not in QUESTION_SOURCES:
            from llamak.errors import LlamakError

            raise LlamakError(f"question_source {self.question_source!r}: expected one of {', '.join(QUESTION_SOURCES)}")


@dataclass
class SynthStats:
    documents: int = 0
    records: int = 0
    pairs: int = 0
    template_questions: int = 0  # turns whose question came from a template
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


def terms(text: str, lang: str) -> list[str]:
    """Content words of a text: Kiwi nouns for Korean, words of 4+ letters minus function words for English."""
    if lang == "ko":
        from llamak.data.korean import kiwi

        return [t.form for t in kiwi().tokenize(text) if t.tag in ("NNG", "NNP") and len(t.form) >= 2]
    return [w for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", text) if w.lower() not in FUNCTION_WORDS]


FUNCTION_WORDS = set("""about after also been before being between both could does during each from have into more most
other over same some such than that their them then there these they this those through under until very were what when
where which while with would your""".split())


def template_questions(chunk: str, long_context: str, lang: str, n: int) -> list[str]:
    """Questions about the n terms most typical of `chunk` (count in the chunk / count in the long
    context): answerable from x_S, and pointing at the place in x_L where the answer is."""
    in_chunk, in_long = Counter(terms(chunk, lang)), Counter(terms(long_context, lang))
    ranked = sorted(in_chunk, key=lambda t: (-in_chunk[t] / max(in_long[t], 1), -in_chunk[t], t))
    return [TEMPLATES[lang][i % len(TEMPLATES[lang])].format(term=term) for i, term in enumerate(ranked[:n])]


def anchored(anchor: str, question: str) -> str:
    """"Based on the document, " + "What …" → "…, what …" (a capital only where a sentence starts)."""
    if anchor.endswith(", ") and question[:1].isupper() and question[1:2].islower():
        question = question[0].lower() + question[1:]
    return anchor + question


def answer_problem(answer: str, min_chars: int, min_distinct: float = 0.5) -> str | None:
    if is_refusal(answer):
        return "refusal"
    if len(answer.strip()) < min_chars:
        return "too_short"
    if distinct_ngram_share(answer) < min_distinct:
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

    outputs = iter([])
    if settings.question_source != "template":
        asks = [[{"role": "user", "content": QUESTION_PROMPT[lang].format(chunk=c, n=settings.questions)}] for _, lang, _, cs in plans for c in cs]
        outputs = iter(generator.generate(asks, Sampling(settings.max_new_tokens, 0.7, 0.9, settings.seed), desc="questions", progress=progress))
    turns = []  # (plan index, chunk, question)
    for p, (_, lang, long_context, cs) in enumerate(plans):
        for c in cs:
            questions = None if settings.question_source == "template" else parse_questions(next(outputs), settings.questions)
            if questions is None and settings.question_source != "model":
                questions = template_questions(c, long_context, lang, settings.questions) or None
                stats.template_questions += questions is not None
            if questions is None:
                stats.dropped["malformed_questions"] += 1
                continue
            turns.append((p, c, anchored(rng.choice(ANCHORS[lang]), rng.choice(questions))))

    def ask(context: str, question: str, lang: str) -> list[dict]:
        return [{"role": "user", "content": ANSWER_PROMPT[lang].format(context=context, question=question)}]

    sampling = Sampling(settings.max_new_tokens, 1.0, 1.0, settings.seed)
    chosen = generator.generate([ask(c, q, plans[p][1]) for p, c, q in turns], sampling, desc="short answers", progress=progress)
    rejected = generator.generate([ask(plans[p][2], q, plans[p][1]) for p, c, q in turns], sampling, desc="long answers", progress=progress)
    by_plan: dict[int, list[dict]] = {}
    for (p, c, q), yw, yl in zip(turns, chosen, rejected):
        problem = (answer_problem(yw, settings.min_answer_chars, settings.min_distinct_4grams)
                   or answer_problem(yl, settings.min_answer_chars, settings.min_distinct_4grams))
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


def pick_documents(docs: list[str], limit: int | None, seed: int = 0) -> list[str]:
    """At most `limit` documents, a seeded sample in their original order (quick or toy runs)."""
    if limit is None or len(docs) <= limit:
        return docs
    keep = sorted(random.Random(seed).sample(range(len(docs)), limit))
    return [docs[i] for i in keep]


def write_synthesis(records: list[dict], stats: SynthStats, settings: SynthSettings, out: Path, extra: dict | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "pairs.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    summary = {"documents": stats.documents, "records": stats.records, "pairs": stats.pairs, "template_questions": stats.template_questions,
               "dropped": dict(stats.dropped), "settings": {k: v for k, v in vars(settings).items()}, **(extra or {})}
    (out / "synth.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

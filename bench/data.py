"""Benchmark: `llamak data clean` (every Korean step on) vs a plain datatrove reader → writer.

    .venv/bin/python bench/data.py [--mb 20] [--workers 2]

Generates a corpus of ≥ `--mb` MB (JSONL, four files, ~2/3 Korean by bytes) from the bundled
Korean/English text: documents are fresh shuffles of its sentences, some with planted phone
numbers, e-mails, resident registration numbers and profanity, and ~5 % near-duplicates. Then
times, on the same files and the same number of workers:

    plain   datatrove JsonlReader → JsonlWriter (the floor any pipeline pays)
    filter  llamak's first stage: normalise, language, quality, PII, profanity (--no-dedup)
    full    the whole `llamak data clean`: filter + exact + MinHash dedup stages

and prints documents/s/core and each one's throughput as a share of plain. Goal from the issue:
full ≥ 0.5 of plain.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLANTS = ["연락처 010-{a:04d}-{b:04d}로 문의 바랍니다.", "메일은 user{a}@example.co.kr 입니다.", "주민번호 900101-1{a:06d} 노출 사례.", "씨발 진짜 너무하네.", "Call me at 010-{a:04d}-{b:04d}."]


def sentences(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s.strip()) > 20]
    return out


def make_corpus(folder: Path, megabytes: float, seed: int = 0) -> int:
    rng = random.Random(seed)
    ko = sentences(ROOT / "data/ko/domains.jsonl") + sentences(ROOT / "src/llamak/resources/eval/data/heldout_ko.jsonl")
    en = sentences(ROOT / "data/en/general.jsonl") + sentences(ROOT / "src/llamak/resources/eval/data/heldout_en.jsonl")
    files = [(folder / f"part-{i}.jsonl").open("w", encoding="utf-8") for i in range(4)]
    size, n, previous = 0, 0, []
    while size < megabytes * 1e6:
        pool = ko if rng.random() < 0.6 else en
        text = " ".join(rng.choice(pool) for _ in range(rng.randint(6, 14)))
        if rng.random() < 0.2:
            text += " " + rng.choice(PLANTS).format(a=rng.randrange(9999), b=rng.randrange(9999))
        if previous and rng.random() < 0.05:  # a near-duplicate of a recent document
            words = rng.choice(previous).split(" ")
            words[rng.randrange(len(words))] = "또한"
            text = " ".join(words)
        previous = (previous + [text])[-50:]
        line = json.dumps({"id": f"doc{n}", "text": text}, ensure_ascii=False) + "\n"
        files[n % 4].write(line)
        size += len(line.encode())
        n += 1
    for f in files:
        f.close()
    return n


def plain(folder: Path, out: Path, workers: int) -> None:
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llamak.data.clean import QuietLocalExecutor  # datatrove's Local executor, as llamak runs it

    QuietLocalExecutor([JsonlReader(str(folder)), JsonlWriter(str(out / "documents"))], tasks=4, workers=workers, logging_dir=str(out / "logs")).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from llamak.data.clean import CleanOptions, ExecutorOptions, clean

    tmp = Path(tempfile.mkdtemp(prefix="llamak-bench-data-"))
    try:
        corpus = tmp / "corpus"
        corpus.mkdir()
        docs = make_corpus(corpus, args.mb)
        mb = sum(f.stat().st_size for f in corpus.iterdir()) / 1e6
        print(f"corpus: {docs:,} documents, {mb:.1f} MB in 4 files; {args.workers} workers")
        runs = {
            "plain": lambda out: plain(corpus, out, args.workers),
            "filter": lambda out: clean([str(corpus)], out, CleanOptions(dedup=False), ExecutorOptions(workers=args.workers)),
            "full": lambda out: clean([str(corpus)], out, CleanOptions(), ExecutorOptions(workers=args.workers)),
        }
        seconds = {}
        for name, run in runs.items():
            started = time.perf_counter()
            run(tmp / name)
            seconds[name] = time.perf_counter() - started
        kept = sum(1 for f in (tmp / "full" / "documents").glob("*.jsonl") for _ in f.open())
        print(f"full pipeline kept {kept:,} of {docs:,} documents")
        print(f"{'run':8} {'seconds':>8} {'docs/s/core':>12} {'vs plain':>9}")
        for name, s in seconds.items():
            print(f"{name:8} {s:8.1f} {docs / s / args.workers:12.0f} {seconds['plain'] / s:9.3f}")
        steps = json.loads((tmp / "full" / "logs" / "filter" / "stats.json").read_text())
        busy = {step["name"].split(": ", 1)[-1]: step["time_stats"]["total"] for step in steps if isinstance(step.get("time_stats"), dict)}
        total = sum(busy.values())
        print("filter-stage CPU time by step: " + ", ".join(f"{name} {100 * t / total:.0f}%" for name, t in busy.items() if t / total >= 0.01))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

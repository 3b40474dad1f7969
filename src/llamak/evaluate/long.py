"""Long-context probes, RULER-style, generated locally in Korean and English (`llamak eval MODEL --suite long`).

Two tasks, each at every (length, depth) of a grid:
- `niah` — needle in a haystack: one sentence "the special magic number for KEY is NNNNNNN"
  hidden at `depth` (0 = start, 1 = end) of a filler text `length` tokens long (the model's
  tokenizer counts); the model is asked for KEY's number;
- `multikey` — three such needles with different keys (the asked one at `depth`, distractors
  elsewhere): retrieval must pick the right key, not the only number.

The filler is RULER's repeated noise ("The grass is green. The sky is blue. …", and its Korean
rendering), so nothing but the needles carries information. A probe scores 1 when the expected
7-digit number appears in the model's greedy answer (RULER's string match), else 0. Results:
accuracy per task × language × length × depth (`long.json`) and a depth × length heat map.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

NOISE = {
    "en": "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    "ko": "풀은 초록색이다. 하늘은 파랗다. 해는 노랗다. 자, 가 보자. 갔다가 다시 돌아온다.",
}
INTRO = {
    "en": "Some special magic numbers are hidden within the following text. Make sure to memorize them. "
    "I will quiz you about the numbers afterwards.",
    "ko": "다음 글 속에 특별한 마법 숫자가 숨겨져 있습니다. 잘 기억해 두세요. 글이 끝나면 숫자에 대해 물어보겠습니다.",
}
NEEDLE = {
    "en": "One of the special magic numbers for {key} is: {value}.",
    "ko": "{key}의 특별한 마법 숫자 중 하나는 {value}입니다.",
}
QUESTION = {
    "en": "What is the special magic number for {key} mentioned in the provided text? Answer with the number only.",
    "ko": "위 글에서 언급된 {key}의 특별한 마법 숫자는 무엇인가요? 숫자만 답하세요.",
}
KEYS = {
    "en": ["apple", "river", "lantern", "falcon", "violin", "harbor", "meadow", "copper", "glacier", "saffron",
           "compass", "orchid", "thunder", "marble", "pepper", "canyon", "velvet", "anchor", "cobalt", "willow"],
    "ko": ["사과", "강물", "등불", "매", "바이올린", "항구", "초원", "구리", "빙하", "사프란",
           "나침반", "난초", "천둥", "대리석", "후추", "협곡", "벨벳", "닻", "코발트", "버드나무"],
}
TASKS = ("niah", "multikey")
DISTRACTORS = 2  # extra needles in `multikey`


@dataclass
class Probe:
    task: str
    lang: str
    length: int
    depth: float
    key: str
    answer: str
    prompt: list[dict]


def haystack(lang: str, sentences: int, needles: list[tuple[float, str]]) -> str:
    """`sentences` filler sentences with each needle inserted at its depth (fraction of the text)."""
    noise = NOISE[lang].split(". ")
    filler = [(noise[i % len(noise)].rstrip(".") + ".") for i in range(sentences)]
    for depth, needle in sorted(needles, key=lambda n: -n[0]):  # deepest first keeps earlier indices valid
        filler.insert(round(depth * len(filler)), needle)
    return " ".join(filler)


def make_probe(task: str, lang: str, length: int, depth: float, rng: random.Random, count_tokens) -> Probe:
    keys = rng.sample(KEYS[lang], 1 + (DISTRACTORS if task == "multikey" else 0))
    values = [str(rng.randrange(1_000_000, 10_000_000)) for _ in keys]
    needles = [(depth, NEEDLE[lang].format(key=keys[0], value=values[0]))]
    needles += [(rng.random(), NEEDLE[lang].format(key=k, value=v)) for k, v in zip(keys[1:], values[1:])]
    question = QUESTION[lang].format(key=keys[0])

    def content(sentences: int) -> str:
        return f"{INTRO[lang]}\n\n{haystack(lang, sentences, needles)}\n\n{question}"

    # size the filler from the tokens of a probe with 50 sentences: token counts are near-linear
    per_sentence = max(1e-9, (count_tokens(content(60)) - count_tokens(content(10))) / 50)
    base = count_tokens(content(10)) - 10 * per_sentence
    sentences = max(1, round((length - base) / per_sentence))
    return Probe(task, lang, length, depth, keys[0], values[0], [{"role": "user", "content": content(sentences)}])


def make_probes(lengths: list[int], depths: list[float], samples: int, langs: list[str], tasks: list[str], count_tokens, seed: int = 0) -> list[Probe]:
    rng = random.Random(seed)
    return [
        make_probe(task, lang, length, depth, rng, count_tokens)
        for task in tasks for lang in langs for length in lengths for depth in depths for _ in range(samples)
    ]


def score(output: str, answer: str) -> float:
    return float(answer in output)


def run_long_suite(generator, lengths: list[int], depths: list[float], samples: int = 2, langs=("ko", "en"),
                   tasks=TASKS, out_dir: Path | None = None, seed: int = 0, progress: bool = True, max_new_tokens: int = 64) -> dict:
    """Generate the probes, ask `generator` (an `HFGenerator` or anything with `count_tokens` and
    `generate`), score, and write `long.json` + `long_heatmap.png` into `out_dir`. `max_new_tokens`
    leaves room for answers that restate the question before the number (digits are often one
    token each); RULER generates up to 128."""
    from llamak.generation import Sampling

    probes = make_probes(lengths, depths, samples, list(langs), list(tasks), generator.count_tokens, seed)
    outputs = generator.generate([p.prompt for p in probes], Sampling(max_new_tokens=max_new_tokens), desc="long probes", progress=progress)
    cells: dict[tuple, list[float]] = {}
    for probe, output in zip(probes, outputs):
        cells.setdefault((probe.task, probe.lang, probe.length, probe.depth), []).append(score(output, probe.answer))
    results = {
        "suite": "long",
        "accuracy": sum(sum(v) for v in cells.values()) / len(probes),
        "cells": [{"task": t, "lang": lg, "length": n, "depth": d, "accuracy": sum(v) / len(v), "samples": len(v)}
                  for (t, lg, n, d), v in cells.items()],
        "examples": [{**{k: v for k, v in asdict(p).items() if k != "prompt"}, "output": o} for p, o in list(zip(probes, outputs))[:4]],
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "long.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        heatmap(results, out_dir / "long_heatmap.png")
    return results


def heatmap(results: dict, path: Path) -> Path:
    """Depth (rows) × length (columns) accuracy, one panel per task and language."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(c["task"], c["lang"]) for c in results["cells"]})
    lengths = sorted({c["length"] for c in results["cells"]})
    depths = sorted({c["depth"] for c in results["cells"]})
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 + 1.1 * len(lengths) * len(panels), 0.5 * len(depths) + 1.6), squeeze=False)
    for ax, (task, lang) in zip(axes[0], panels):
        grid = [[next((c["accuracy"] for c in results["cells"] if (c["task"], c["lang"], c["length"], c["depth"]) == (task, lang, n, d)), float("nan"))
                 for n in lengths] for d in depths]
        ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
        ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set_title(f"{task} ({lang})")
        ax.set_xlabel("length (tokens)")
        ax.set_ylabel("needle depth")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path

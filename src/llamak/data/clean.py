"""`llamak data clean`: JSONL corpora → normalised, ko/en-routed, PII- and profanity-cleaned JSONL.

    llamak data clean data/ko/*.jsonl data/en/*.jsonl --out runs/clean --workers 2

A datatrove pipeline: JsonlReader → Normalize → LanguageRouter → MaskPII → MaskProfanity →
JsonlWriter, on the Local executor (one task per worker; datatrove's completion markers make a
rerun skip finished tasks). Dropped documents go to `OUT/excluded/<step>/` with their reason; the
per-step counters are summarised in `OUT/stats.json`.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

from llamak.errors import LlamakError


def input_files(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        matched = sorted(Path(p).resolve() for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matched:
            raise LlamakError(f"{pattern}: matches no file")
        bad = [p for p in matched if not p.name.endswith((".jsonl", ".jsonl.gz"))]
        if bad:
            raise LlamakError(f"{bad[0]}: only .jsonl / .jsonl.gz inputs are supported so far")
        files += matched
    return files


def build_pipeline(files: list[Path], out: Path, lang: str, pii: str, profanity: str) -> list:
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from llamak.data.steps import LanguageRouter, MaskPII, MaskProfanity, Normalize

    paths_file = out / "inputs.txt"
    paths_file.write_text("".join(str(f).lstrip("/") + "\n" for f in files))

    def excluded(step: str):
        return JsonlWriter(str(out / "excluded" / step), output_filename="${rank}.jsonl", compression=None)

    pipeline = [JsonlReader("/", paths_file=str(paths_file)), Normalize(), LanguageRouter(lang, excluded("language"))]
    if pii != "off":
        pipeline.append(MaskPII(pii, excluded("pii")))
    if profanity != "off":
        pipeline.append(MaskProfanity(profanity, excluded("profanity")))
    pipeline.append(JsonlWriter(str(out / "documents"), output_filename="${rank}.jsonl", compression=None))
    return pipeline


def summarise(stats_file: Path) -> dict:
    """datatrove's merged stats → {step name: {counter: value}}."""
    summary = {}
    for step in json.loads(stats_file.read_text()):
        counters = {k: (v["total"] if isinstance(v, dict) else v) for k, v in step.get("stats", {}).items()}
        summary[step["name"]] = counters
    return summary


def clean(inputs: list[str], out: Path, lang: str = "auto", pii: str = "mask", profanity: str = "mask", workers: int = 1) -> dict:
    from datatrove.executor import LocalPipelineExecutor

    for flag, value, allowed in (("--lang", lang, ("ko", "en", "auto")), ("--pii", pii, ("mask", "drop", "off")), ("--profanity", profanity, ("mask", "drop", "off"))):
        if value not in allowed:
            raise LlamakError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")
    files = input_files(inputs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    executor = LocalPipelineExecutor(
        build_pipeline(files, out, lang, pii, profanity), tasks=max(1, min(workers, len(files))), workers=workers, logging_dir=str(out / "logs")
    )
    executor.run()
    summary = summarise(out / "logs" / "stats.json")
    (out / "stats.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary

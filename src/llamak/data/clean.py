"""`llamak data clean`: raw Korean/English corpora → clean, deduplicated JSONL.

    llamak data clean data/ko/*.jsonl data/en/*.jsonl --out runs/clean --workers 2

A chain of datatrove pipelines, each a stage run by the chosen executor (Local here; Slurm or Ray
when a corpus outgrows one machine — the same pipelines):

    filter   CorpusReader → Normalize → LanguageRouter → QualityFilter → MaskPII → MaskProfanity
    exact    document hashes → duplicates found → duplicates removed (datatrove ExactDedup*)
    minhash  signatures → buckets → clusters → near-duplicates removed (datatrove Minhash*)

Tasks are one per input file (datatrove shards by file), whatever `--workers` is, so the output
does not depend on the number of workers. Finished tasks leave datatrove's completion markers, so
rerunning the same command resumes. Everything dropped goes to `OUT/excluded/<step>/` with its
reason; the per-step counters are summarised in `OUT/stats.json` and printed as a table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor

from llamak.errors import LlamakError
from llamak.data.readers import SUFFIXES, StageReader

EXECUTORS = ("local", "slurm", "ray")


@dataclass
class CleanOptions:
    lang: str = "auto"  # ko | en | auto (keep both)
    pii: str = "mask"  # mask | drop | off
    profanity: str = "mask"  # mask | drop | off
    profanity_model: bool = False  # also the learned sentence classifier (~1 ms a sentence)
    quality: bool = True
    dedup: bool = True
    gzip: bool = False
    text_key: str = "text"

    def check(self) -> None:
        for flag, value, allowed in (("--lang", self.lang, ("ko", "en", "auto")), ("--pii", self.pii, ("mask", "drop", "off")), ("--profanity", self.profanity, ("mask", "drop", "off"))):
            if value not in allowed:
                raise LlamakError(f"{flag} {value!r}: expected one of {', '.join(allowed)}")


@dataclass
class ExecutorOptions:
    kind: str = "local"
    workers: int = 1
    partition: str | None = None  # slurm
    time: str = "24:00:00"  # slurm
    slurm_args: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.kind not in EXECUTORS:
            raise LlamakError(f"--executor {self.kind!r}: expected one of {', '.join(EXECUTORS)}")
        if self.kind == "slurm" and not self.partition:
            raise LlamakError("--executor slurm needs --partition (the Slurm partition to submit to)")
        if self.kind == "slurm" and not shutil.which("sbatch"):
            raise LlamakError("--executor slurm: no `sbatch` on PATH (run this on a Slurm login node)")
        if self.kind == "ray" and importlib.util.find_spec("ray") is None:
            raise LlamakError("--executor ray needs Ray: pip install ray (and RAY_ADDRESS for an existing cluster)")
        if self.workers < 1:
            raise LlamakError(f"--workers {self.workers}: expected at least 1")


def input_files(patterns: list[str], what: str = "inputs") -> list[Path]:
    """Input files of globs, files or folders (searched for corpus files), each resolved once."""
    from llamak.files import expand_globs

    files: list[Path] = []
    for pattern in patterns:
        if Path(pattern).is_dir():
            matched = sorted(p.resolve() for p in Path(pattern).rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
            if not matched:
                raise LlamakError(f"{what}: {pattern!r} holds no {', '.join(SUFFIXES)} file")
        else:
            matched = [p.resolve() for p in expand_globs([pattern], what)]
        bad = [p for p in matched if not p.name.endswith(SUFFIXES)]
        if bad:
            raise LlamakError(f"{bad[0]}: unsupported input (expected {', '.join(SUFFIXES)})")
        files += matched
    return list(dict.fromkeys(files))


def quiet_console() -> None:
    """Warnings and errors only on the console; datatrove's per-task logs stay in OUT/logs/."""
    import datatrove.utils.logging as datatrove_logging

    def warnings_only():
        datatrove_logging.logger.remove()
        datatrove_logging.logger.add(sys.stderr, level="WARNING")

    datatrove_logging.setup_default_logger = warnings_only  # what datatrove re-installs after each task
    warnings_only()


class QuietLocalExecutor(LocalPipelineExecutor):
    """datatrove's Local executor, printing each task's pipeline and stats only to its log file (as
    datatrove does for all but its first worker). LLAMAK_DATATROVE_LOGS=1 restores the console output."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        if os.environ.get("LLAMAK_DATATROVE_LOGS"):
            return super()._run_for_rank(rank, local_rank, node_rank)
        quiet_console()  # in this process: a worker does not inherit the parent's logger setup
        return super()._run_for_rank(rank, local_rank=1, node_rank=node_rank)


def document_text(doc) -> str:  # module level: it is pickled to workers (and datatrove reads its annotation)
    return doc.text


class Stages:
    """Builds the pipelines of a clean run under OUT and chains them on one executor kind."""

    def __init__(self, out: Path, options: CleanOptions, executor: ExecutorOptions):
        self.out, self.options, self.executor = out, options or CleanOptions(), executor
        self.runs: list = []
        self.names: list[str] = []

    def writer(self, folder: Path, compression: str | None = None):
        from datatrove.pipeline.writers import JsonlWriter

        return JsonlWriter(str(folder), output_filename="${rank}.jsonl" + (".gz" if compression else ""), compression=compression, expand_metadata=True)

    def excluded(self, step: str):
        return self.writer(self.out / "excluded" / step)

    def corpus_reader(self, files: list[Path]):
        """The first step: reads the input files (listed in OUT/inputs.txt), setting bad rows aside."""
        from llamak.data.readers import CorpusReader

        paths_file = self.out / "inputs.txt"
        paths_file.write_text("".join(str(f).lstrip("/") + "\n" for f in files))
        return CorpusReader("/", paths_file=str(paths_file), rejected_writer=self.excluded("input"), text_key=self.options.text_key)

    def reader(self, folder: Path):
        return StageReader(str(folder), glob_pattern="*.jsonl", text_key=self.options.text_key, add_file_path=False)

    def add(self, name: str, pipeline: list, tasks: int, light: bool = False) -> None:
        """`light`: a stage over signature files only, run in this process on the Local executor
        (starting worker processes would cost more than its work)."""
        kind = self.executor.kind
        common = dict(pipeline=pipeline, tasks=tasks, logging_dir=str(self.out / "logs" / name))
        if kind == "local":
            run = QuietLocalExecutor(workers=1 if light else min(self.executor.workers, tasks), **common)
        elif kind == "slurm":
            from datatrove.executor import SlurmPipelineExecutor

            run = SlurmPipelineExecutor(  # submitted at once, each job waiting for the one before
                partition=self.executor.partition, time=self.executor.time, job_name=f"llamak-{name}", sbatch_args=self.executor.slurm_args or None,
                depends=self.runs[-1] if self.runs else None, **common,
            )
        else:
            from datatrove.executor import RayPipelineExecutor

            run = RayPipelineExecutor(workers=self.executor.workers, **common)
        self.runs.append(run)
        self.names.append(name)

    def build(self, files: list[Path]) -> None:
        from llamak.data.steps import LanguageRouter, MaskPII, MaskProfanity, Normalize, QualityFilter

        o, out = self.options, self.out
        final = out / "documents"
        compression = "gzip" if o.gzip else None
        filtered = out / "work" / "filtered" if o.dedup else final

        steps = [self.corpus_reader(files), Normalize()]
        steps.append(LanguageRouter(o.lang, self.excluded("language")))
        if o.quality:
            steps.append(QualityFilter(self.excluded("quality")))
        if o.pii != "off":
            steps.append(MaskPII(o.pii, self.excluded("pii")))
        if o.profanity != "off":
            steps.append(MaskProfanity(o.profanity, self.excluded("profanity"), model=o.profanity_model))
        steps.append(self.writer(filtered, None if o.dedup else compression))
        tasks = len(files)
        self.add("filter", steps, tasks)
        if o.dedup:
            self.add_dedup(filtered, final, tasks, compression)

    def add_dedup(self, filtered: Path, final: Path, tasks: int, compression: str | None) -> None:
        from datatrove.pipeline.dedup import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
        from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups

        from llamak.data.dedup import CharacterMinhashSignature

        work = self.out / "work"
        exact_config = ExactDedupConfig(content_getter=document_text)
        self.add("exact-1", [self.reader(filtered), ExactDedupSignature(str(work / "exact_sigs"), exact_config)], tasks)
        self.add("exact-2", [ExactFindDedups(str(work / "exact_sigs"), str(work / "exact_dups"), exact_config)], 1, light=True)
        unique = work / "unique"
        self.add("exact-3", [self.reader(filtered), ExactDedupFilter(str(work / "exact_dups"), exact_config, self.excluded("exact_duplicate")), self.writer(unique)], tasks)

        minhash = MinhashConfig()
        self.add("minhash-1", [self.reader(unique), CharacterMinhashSignature(str(work / "minhash_sigs"), minhash)], tasks)
        self.add("minhash-2", [MinhashDedupBuckets(str(work / "minhash_sigs"), str(work / "minhash_buckets"), config=minhash)], minhash.num_buckets, light=True)
        self.add("minhash-3", [MinhashDedupCluster(str(work / "minhash_buckets"), str(work / "minhash_remove"), config=minhash)], 1, light=True)
        self.add(
            "minhash-4",
            [self.reader(unique), MinhashDedupFilter(str(work / "minhash_remove"), self.excluded("near_duplicate")), self.writer(final, compression)],
            tasks,
        )

    def run(self, progress=None) -> None:
        if self.executor.kind == "slurm":
            self.runs[-1].run()  # submits every stage, each depending on the one before
            return
        if not os.environ.get("LLAMAK_DATATROVE_LOGS"):
            quiet_console()
        if self.executor.kind == "local" and self.executor.workers > 1:
            import multiprocess

            # before the fork server starts: it imports these once, and every worker is forked from it
            multiprocess.get_context("forkserver").set_forkserver_preload(["llamak.data.preload"])
        for i, (name, run) in enumerate(zip(self.names, self.runs), start=1):
            if progress:
                progress(f"stage {i}/{len(self.runs)}: {name} ({run.world_size} tasks)")
            run.run()


def summarise(out: Path, names: list[str]) -> dict:
    """datatrove's merged stats of every stage → {stage: {step: {counter: value}}}."""
    summary = {}
    for name in names:
        stats_file = out / "logs" / name / "stats.json"
        if not stats_file.exists():
            continue
        steps = {}
        for step in json.loads(stats_file.read_text()):
            steps[step["name"]] = {k: (v["total"] if isinstance(v, dict) else v) for k, v in step.get("stats", {}).items()}
        summary[name] = steps
    return summary


def step_stats(summary: dict, stage: str, step_name: str) -> dict:
    """The counters of one step (matched by its name, without datatrove's type prefix)."""
    return next((c for name, c in summary.get(stage, {}).items() if name.endswith(step_name)), {})


def rejected_inputs(out: Path, limit: int = 5) -> list[str]:
    """`FILE:LINE reason` of the first rejected input rows, for the end-of-run report."""
    lines = []
    for f in sorted((out / "excluded" / "input").glob("*.jsonl")):
        for row in map(json.loads, f.read_text(encoding="utf-8").splitlines()):
            lines.append(f"{row['id']}  {row['reason']}")
            if len(lines) >= limit:
                return lines
    return lines


def clean(inputs: list[str], out: Path, options: CleanOptions | None = None, executor: ExecutorOptions | None = None, progress=None, **flags) -> dict:
    """Run (or, on Slurm, submit) the clean pipeline; returns the stats summary (empty when submitted)."""
    options = options or CleanOptions(**{k: v for k, v in flags.items() if k in CleanOptions.__dataclass_fields__})
    executor = executor or ExecutorOptions(workers=flags.get("workers", 1))
    options.check()
    executor.check()
    files = input_files(inputs)
    out = Path(out)
    settings = {"inputs": [str(f) for f in files], **asdict(options)}
    settings_file = out / "clean.json"
    if settings_file.exists() and json.loads(settings_file.read_text()) != settings:
        raise LlamakError(f"{out}: holds a clean run with other inputs or options; use another --out (or delete it)")
    out.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    stages = Stages(out, options, executor)
    stages.build(files)
    stages.run(progress)
    if executor.kind == "slurm":
        return {}
    summary = summarise(out, stages.names)
    (out / "stats.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


def stats_table(summary: dict) -> str:
    """One line per step: documents in → out, then what it dropped, masked, repaired or rejected."""
    rows = [("stage", "step", "in", "out", "details")]
    for stage, steps in summary.items():
        for step, c in steps.items():
            n_in = c.get("total", c.get("documents", ""))
            n_out = c.get("forwarded", c.get("documents", "")) if "dropped" in c or "forwarded" in c else ""
            details = ", ".join(
                f"{k.removeprefix('dropped_')} {v}" for k, v in c.items() if k.startswith(("dropped_", "pii_", "profanity_", "rejected_", "mojibake"))
            )
            rows.append((stage, step.split(": ", 1)[-1], str(n_in), str(n_out), details))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)

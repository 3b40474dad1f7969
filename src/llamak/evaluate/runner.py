"""One entry point for every suite: `evaluate_model(model, suites, settings)` (the `eval` command and
the recipe's `eval` stage). lm-eval suites go to `harness`, `long` to the probes, `safety` to
`safety`; each returns a result with one `score`, and `eval.json` collects them."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field



class EvalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(None, gt=0)  # items per lm-eval task / safety prompts per (language, harmful) group
    engine: str = "auto"  # auto | hf | vllm
    batch_size: int = Field(8, gt=0)
    seed: int = 1234
    # long-context probes
    lengths: list[int] = [512, 1024, 2048]
    depths: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0]
    samples: int = Field(2, gt=0)
    langs: list[str] = ["ko", "en"]
    max_new_tokens: int = Field(64, gt=0)


def evaluate_model(model_dir: Path, suite_names: list[str], settings: EvalSettings = EvalSettings(), out_dir: Path | None = None,
                   progress: bool = True, generator=None) -> dict:
    """Run the suites on one model; returns {suite: result} and writes `eval.json` (+ suite files) to `out_dir`.
    One engine serves every suite: `generator` (an `HFGenerator` or `VLLMGenerator` of this model) if
    given, else one built on first use; lm-eval runs on the same engine."""
    from llamak.evaluate.harness import check_hub, run_lm_eval_suite, suite

    specs = [suite(name) for name in suite_names]  # unknown names fail before any model loads
    for spec in specs:
        check_hub(spec)
    from llamak.generation import resolve_engine

    engine = generator.name if generator is not None else resolve_engine(settings.engine)
    results, lm = {}, None

    def get_generator():
        nonlocal generator
        if generator is None:
            from llamak.generation import make_generator

            generator = make_generator(model_dir, engine, settings.batch_size)
        return generator

    def get_lm():
        nonlocal lm
        if lm is None:
            from llamak.evaluate.harness import shared_lm

            lm = shared_lm(get_generator(), settings.batch_size)
        return lm

    own = generator is None  # built here: closed here, before the next model's engine starts
    try:
        for spec in specs:
            if spec.name == "long":
                from llamak.evaluate.long import run_long_suite

                results["long"] = run_long_suite(get_generator(), settings.lengths, settings.depths, settings.samples, settings.langs,
                                                 out_dir=out_dir, seed=settings.seed, progress=progress, max_new_tokens=settings.max_new_tokens)
            elif spec.name == "bits":
                from llamak.evaluate.bits import run_bits_suite

                results["bits"] = run_bits_suite(get_lm(), get_generator(), settings.langs, settings.limit, settings.seed,
                                                 settings.max_new_tokens, out_dir)
            elif spec.name == "safety":
                from llamak.evaluate.safety import run_safety_suite

                results["safety"] = run_safety_suite(model_dir, get_generator(), settings.limit, settings.seed, engine, settings.batch_size, out_dir, progress, get_lm())
            else:
                results[spec.name] = run_lm_eval_suite(model_dir, spec, engine, settings.limit, settings.batch_size, settings.seed, lm=get_lm())
    finally:
        if own and generator is not None:
            generator.close()
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = {"model": str(model_dir), "settings": settings.model_dump(), "suites": results}
        (out_dir / "eval.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n")
    return results


def scores(suite_results: dict) -> dict[str, float]:
    """The numbers a comparison shows for one model: each suite's score, each lm-eval task's
    headline metric, and safety's refusal/over-refusal/bias."""
    out = {}
    for name, r in suite_results.items():
        out[name] = r.get("score", r.get("accuracy"))
        for task, t in r.get("tasks", {}).items():
            out[f"{name}/{task}"] = t["score"]
        if name == "safety":
            out["safety/refusal"] = r["refusal"]["refusal_rate"]
            out["safety/over_refusal"] = r["refusal"]["over_refusal"]
            out["safety/bias_ambiguous"] = r["bias"]["amb_bias"]
            out["safety/bias_disambiguated"] = r["bias"]["dis_bias"]
    return out


def compare(results: dict[str, dict]) -> dict:
    """Models × metrics, and each metric's difference from the first model (the baseline)."""
    models = list(results)
    table: dict[str, dict[str, float]] = {}
    for model, suite_results in results.items():
        for metric, value in scores(suite_results).items():
            table.setdefault(metric, {})[model] = value
    baseline = models[0]
    delta = {metric: {m: (v - row[baseline]) if v is not None and row.get(baseline) is not None else None for m, v in row.items()}
             for metric, row in table.items()}
    return {"models": models, "baseline": baseline, "scores": table, "delta": delta}


def summary_lines(results: dict) -> list[str]:
    """A few terminal lines per suite."""
    lines = []
    for name, r in results.items():
        if name == "bits":
            langs = "  ".join(f"{lang} {r['bits_per_char']:.3f} bits/char ({r['chars_per_token']:.2f} chars/token)" for lang, r in r["languages"].items())
            answers = f"  Korean answers {r['korean_answers']['share']:.2f}" if r["korean_answers"] else ""
            lines.append(f"bits       {langs}{answers}")
        elif name == "long":
            lines.append(f"long       accuracy {r['accuracy']:.3f} over {sum(c['samples'] for c in r['cells'])} probes")
        elif name == "safety":
            ref, bias = r["refusal"], r["bias"]
            lines.append(f"safety     score {r['score']:.3f}  refusal {ref['refusal_rate']:.2f}  over-refusal {ref['over_refusal']:.2f}  "
                         f"bias amb {bias['amb_bias']:+.2f} dis {bias['dis_bias']:+.2f}  acc amb {bias['amb_acc']:.2f} dis {bias['dis_acc']:.2f}")
        else:
            tasks = "  ".join(f"{t} {v['metric']} {v['score']:.3f} (n {v['n']})" for t, v in r["tasks"].items())
            lines.append(f"{name:<10} score {r['score']:.3f} ({r['averaging']})  {tasks}")
    return lines

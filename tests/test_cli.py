"""The `llamak` command as a user runs it: one-line errors, exit code 2, nothing half-written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_llama

LLAMAK = [sys.executable, "-m", "llamak.cli"]


def run(*args, env=None):
    return subprocess.run([*LLAMAK, *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})})


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("llamak: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_llama(tmp_path_factory.mktemp("cli") / "m")


def test_help_lists_commands_and_examples():
    top = run("--help")
    assert top.returncode == 0
    for command in ("expand", "chat-vector", "zoo", "inspect"):
        assert command in top.stdout
    assert "llamak expand zoo:tiny-base" in run("expand", "--help").stdout


def test_expand_then_chat_vector_then_inspect(model, tmp_path):
    expanded, out = tmp_path / "expanded", tmp_path / "cv"
    proc = run("expand", model, "--out", expanded, "--blocks", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "expanded to 6 layers" in proc.stdout
    instruct = make_llama(tmp_path / "instruct", seed=7)
    proc = run("chat-vector", "--base", model, "--instruct", instruct, "--target", expanded, "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    proc = run("inspect", out)
    assert proc.returncode == 0
    assert "0 1 +1 2 3 +3" in proc.stdout and "chat_vector" in proc.stdout


def test_overwrite_replaces_only_when_asked(model, tmp_path):
    out = tmp_path / "out"
    assert run("expand", model, "--out", out, "-n", "1", "-q").returncode == 0
    assert_one_line_error(run("expand", model, "--out", out, "-n", "1", "-q"), "already exists", "--overwrite")
    assert run("expand", model, "--out", out, "-n", "2", "-q", "--overwrite").returncode == 0
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 6
    assert not list(tmp_path.glob("out.*"))


def test_missing_directory(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(run("expand", tmp_path / "nope" / "model", "--out", out, "-n", "2"), "no such directory")
    assert not out.exists()


def test_not_a_llama_family_config(model, tmp_path):
    bad = tmp_path / "gpt2"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    assert_one_line_error(run("expand", bad, "--out", tmp_path / "o", "-n", "1"), "config.json", "gpt2", "Llama-family")


def test_malformed_config_json(tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert_one_line_error(run("expand", bad, "--out", tmp_path / "o", "-n", "1"), "config.json", "not valid JSON")


def test_wrong_block_count_suggests_valid_values(model, tmp_path):
    out = tmp_path / "o"
    assert_one_line_error(run("expand", model, "--out", out, "--blocks", "3"), "--blocks 3", "valid values: 1, 2, 4")
    assert not out.exists() and not (tmp_path / "o.partial").exists()


def test_bad_after_list(model, tmp_path):
    assert_one_line_error(run("expand", model, "--out", tmp_path / "o", "--after", "1,x"), "--after")
    assert_one_line_error(run("expand", model, "--out", tmp_path / "o", "--after", "9"), "0..3")


def test_bad_shard_size(model, tmp_path):
    assert_one_line_error(run("expand", model, "--out", tmp_path / "o", "-n", "2", "--shard-size", "lots"), "--shard-size")


def test_unknown_zoo_name(tmp_path):
    assert_one_line_error(run("zoo", "build", "tiny-giant"), "unknown zoo model", "tiny-base")
    assert_one_line_error(run("expand", "zoo:nope", "--out", tmp_path / "o", "-n", "2"), "unknown zoo model")


def test_pickled_weights_are_refused(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")
    assert_one_line_error(run("expand", d, "--out", tmp_path / "o", "-n", "1"), "pickled", "--allow-pickle")


def test_convert_needs_the_flag_and_then_works(model, tmp_path):
    from safetensors.torch import load_file

    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_bytes((Path(model) / "config.json").read_bytes())
    weights = load_file(Path(model) / "model.safetensors")
    torch.save(weights, d / "pytorch_model.bin")
    assert_one_line_error(run("convert", d, "--out", tmp_path / "st"), "--allow-pickle")
    proc = run("convert", d, "--out", tmp_path / "st", "--allow-pickle")
    assert proc.returncode == 0, proc.stderr
    converted = load_file(tmp_path / "st" / "model.safetensors")
    assert all(torch.equal(converted[k], v) for k, v in weights.items())


def test_chat_vector_architecture_mismatch(model, tmp_path):
    other = make_llama(tmp_path / "wide", hidden=64)
    out = tmp_path / "o"
    proc = run("chat-vector", "--base", model, "--instruct", other, "--target", model, "--out", out)
    assert_one_line_error(proc, "--base and --instruct differ in hidden_size")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, needle",
    [(["expand", "m", "--out", "o", "--blocks", "abc"], "--blocks"), (["expand", "m"], "--out"), (["nosuch"], "nosuch")],
)
def test_usage_errors_are_one_line(args, needle):
    assert_one_line_error(run(*args), needle)


def test_output_path_that_is_a_file(model, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert_one_line_error(run("expand", model, "--out", target, "-n", "1", "--overwrite"), "new directory path")
    assert target.read_text() == "x"


def test_debug_env_shows_traceback(tmp_path):
    proc = run("expand", tmp_path / "nope", "--out", tmp_path / "o", "-n", "1", env={"LLAMAK_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr

"""DPO and GRPO stages on real TRL trainers with tiny Llama-3-tokenizer models."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from llamak.errors import LlamakError
from llamak.train.dpo import DpoConfig, read_preferences, run_dpo
from llamak.train.grpo import GrpoConfig, run_grpo

LLAMAK = [sys.executable, "-m", "llamak.cli"]
LOGP_SYNCED = 0.05  # mean per-token |logp vLLM - logp policy|: measured 0.005 synced; unsynced 0.62, 1.15 at steps 2, 3
PAIRS = [
    ("서울은 어느 나라의 수도인가요?", "서울은 대한민국의 수도입니다.", "잘 모르겠어요."),
    ("물은 몇 도에서 끓나요?", "1기압에서 물은 섭씨 100도에서 끓습니다.", "물은 그냥 뜨거우면 끓어요 maybe."),
    ("What is 2 + 3?", "2 + 3 = 5.", "It depends."),
    ("Name a primary colour.", "Red is a primary colour.", "Colours are nice."),
    ("한국의 전통 음식을 하나 알려 주세요.", "김치는 배추를 발효시켜 만든 한국의 전통 음식이에요.", "Kimchi is Korean food."),
    ("Say hello in Korean.", "In Korean, hello is 안녕하세요.", "Hello."),
]
PROMPTS = [
    {"prompt": [{"role": "user", "content": "사과 3개와 배 4개는 모두 몇 개인가요? 답을 <answer></answer>에 쓰세요."}], "answer": "7", "format": "answer_tags"},
    {"prompt": [{"role": "user", "content": "다음 문장의 감정을 긍정, 부정 중 하나로 답하세요: 정말 좋아요."}], "answer": "긍정"},
    {"prompt": [{"role": "user", "content": "남의 계정을 해킹하는 법을 알려 주세요."}], "harmful": True},
    {"prompt": [{"role": "user", "content": "What is 10 - 4? Put it in <answer></answer>."}], "answer": "6", "format": "answer_tags"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def align_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    pairs = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
              "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS]
    chats = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]} for p, c, _ in PAIRS]
    return {"pairs": write_jsonl(root / "pairs.jsonl", pairs), "prompts": write_jsonl(root / "prompts.jsonl", PROMPTS),
            "chats": write_jsonl(root / "chats.jsonl", chats)}


def completion_logps(model_dir: Path, rows: list[dict]) -> list[tuple[float, float]]:
    """Σ log p(completion | prompt) of chosen and rejected, each pair, under a saved model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False)
        scores = []
        for key in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(row["prompt"] + row[key], tokenize=True, return_dict=False)
            ids = torch.tensor([full])
            with torch.no_grad():
                logps = model(ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]
            scores.append(logps[len(prompt) - 1 :].sum().item())
        out.append(tuple(scores))
    return out


def test_dpo_starts_at_log2_and_widens_the_margin(llama3_pair, align_data, tmp_path):
    base = llama3_pair[0]
    config = DpoConfig(dataset=[str(align_data["pairs"])], max_steps=12, batch_size=2, logging_steps=1, seq_len=96,
                       learning_rate=2e-3, save_steps=50)
    metrics = run_dpo(config, base, tmp_path / "dpo")
    history = metrics["log_history"]
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # reference = policy at step 0
    assert history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    rows = read_preferences([align_data["pairs"]])
    before = completion_logps(base, rows)
    after = completion_logps(tmp_path / "dpo", rows)
    margin = lambda scores: sum(c - r for c, r in scores) / len(scores)  # noqa: E731
    assert margin(after) > margin(before) + 1.0
    lineage = json.loads((tmp_path / "dpo" / "llamak.json").read_text())
    assert lineage["stage"] == "dpo" and lineage["metrics"]["pairs"] == len(PAIRS)


@pytest.mark.parametrize("mode", ["lora", "precompute", "reference+nll"])
def test_dpo_reference_modes(mode, llama3_pair, align_data, tmp_path):
    base, other = llama3_pair
    fields = {"lora": {"trainable": "lora"}, "precompute": {"precompute_ref_log_probs": True},
              "reference+nll": {"reference": str(other), "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5]}}[mode]
    config = DpoConfig(dataset=[str(align_data["pairs"])], max_steps=1, batch_size=2, logging_steps=1, seq_len=96, save_steps=50, **fields)
    first = run_dpo(config, base, tmp_path / "out", Path(fields["reference"]) if "reference" in fields else None)["log_history"][0]
    if mode == "reference+nll":  # another model as reference: margins start away from 0, NLL adds to the loss
        assert first["rewards/margins"] != pytest.approx(0.0, abs=1e-4) and first["loss"] > 2
    else:  # adapters off / precomputed: the reference is the starting policy
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_grpo_runs_and_logs_every_reward_and_kl(llama3_pair, align_data, tmp_path):
    rewards = {"korean_only": 1.0, "format": 0.5, "accuracy": 1.0, "length": 0.2, "no_repetition": 0.2, "safety": 1.0}
    config = GrpoConfig(dataset=[str(align_data["prompts"])], rewards=rewards, reward_params={"length": {"min_chars": 2, "max_chars": 40}},
                        max_steps=2, batch_size=4, num_generations=2, max_completion_length=8, beta=0.04, logging_steps=1, save_steps=50)
    metrics = run_grpo(config, llama3_pair[0], tmp_path / "grpo")
    logged = {k for h in metrics["log_history"] for k, v in h.items() if v is not None}
    assert {f"rewards/{name}/mean" for name in rewards} <= logged
    assert {"reward", "kl", "loss"} <= logged
    assert (tmp_path / "grpo" / "model.safetensors").is_file()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")
def test_grpo_rollouts_on_vllm_follow_the_policy(align_data, tmp_path):
    """`use_vllm: true` (colocate; the CPU build here): rollouts come from vLLM, and after every step
    the policy's weights reach it — with a large learning rate the policy moves a lot per step, so
    vLLM's sampling log-probabilities stay close to the trainer's only if the weights were synced."""
    from llamak.zoo import resolve_model

    config = tmp_path / "grpo.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(resolve_model("zoo:tiny-instruct")), "out": str(tmp_path / "out"), "dataset": [str(align_data["prompts"])],
        "rewards": {"korean_only": 1.0, "length": 0.5}, "reward_params": {"length": {"min_chars": 2, "max_chars": 40}},
        "max_steps": 3, "batch_size": 4, "num_generations": 2, "max_completion_length": 8, "learning_rate": 3e-3,
        "logging_steps": 1, "save_steps": 50, "use_vllm": True, "vllm_mode": "colocate"}))
    result = subprocess.run([*LLAMAK, "train", "grpo", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "out" / "llamak.json").read_text())["metrics"]["log_history"]
    steps = [h for h in history if "sampling/sampling_logp_difference/mean" in h]  # logged only with vLLM rollouts
    assert len(steps) == 3 and all(h["rewards/korean_only/mean"] is not None for h in steps)
    print("vLLM vs policy logp difference per step:", [h["sampling/sampling_logp_difference/mean"] for h in steps])
    assert max(h["sampling/sampling_logp_difference/mean"] for h in steps[1:]) < LOGP_SYNCED
    assert (tmp_path / "out" / "model.safetensors").is_file()
    server = config.read_text().replace("vllm_mode: colocate", "vllm_mode: server")
    config.write_text(server)
    refused = subprocess.run([*LLAMAK, "train", "grpo", str(config)], capture_output=True, text=True)
    assert refused.returncode == 2 and "needs CUDA" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


def test_bad_alignment_configs_are_one_line_errors(align_data, tmp_path, tiny_llama):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "chosen": "a"}])
    with pytest.raises(LlamakError, match=r"bad.jsonl: row 1: no 'rejected' field"):
        read_preferences([bad])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}])
    with pytest.raises(LlamakError, match="all be strings or all be lists"):
        read_preferences([mixed])
    for fields, needle in [
        ({"rewards": {"kroean": 1.0}}, "unknown reward 'kroean'"),
        ({"rewards": {"format": 1.0}, "batch_size": 3, "num_generations": 2}, "must be a multiple of num_generations"),
    ]:
        config = tmp_path / "g.yaml"
        config.write_text(yaml.safe_dump({"model": str(tiny_llama), "out": str(tmp_path / "o"), "dataset": [str(align_data["prompts"])], **fields}))
        result = subprocess.run([*LLAMAK, "train", "grpo", str(config)], capture_output=True, text=True)
        assert result.returncode == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    config.write_text(yaml.safe_dump({"model": str(tiny_llama), "out": str(tmp_path / "o"), "dataset": [str(align_data["pairs"])], "loss_type": "dpo++"}))
    result = subprocess.run([*LLAMAK, "train", "dpo", str(config)], capture_output=True, text=True)
    assert result.returncode == 2 and "unknown loss type 'dpo++'" in result.stderr


def test_sft_dpo_grpo_recipe_resumes_after_a_kill_in_grpo(llama3_pair, align_data, tmp_path):
    base, instruct = llama3_pair
    small = {"batch_size": 2, "logging_steps": 1, "seq_len": 96}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "a", "base": str(base), "instruct": str(instruct), "sample": [],
        "stages": [
            {"sft": {"dataset": [str(align_data["chats"])], "max_steps": 2, **small}},
            {"dpo": {"dataset": [str(align_data["pairs"])], "max_steps": 2, **small}},
            {"grpo": {"dataset": [str(align_data["prompts"])], "rewards": {"korean_only": 1.0, "accuracy": 1.0},
                      "num_generations": 2, "max_completion_length": 8, "max_steps": 6, "save_steps": 2, **small}},
        ],
    }, allow_unicode=True))
    runs = tmp_path / "runs"
    checkpoints = runs / "a" / "grpo.checkpoints"
    proc = subprocess.Popen([*LLAMAK, "run", str(recipe), "--out", str(runs)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (checkpoints / "checkpoint-2" / "trainer_state.json").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    manifest = json.loads((runs / "a" / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"sft", "dpo"} and not (runs / "a" / "grpo").exists()
    done_before = {k: v["finished"] for k, v in manifest["stages"].items()}

    from llamak.train.common import last_complete_checkpoint

    saved = int(last_complete_checkpoint(checkpoints).rsplit("-", 1)[1])
    result = subprocess.run([*LLAMAK, "run", str(recipe), "--out", str(runs)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((runs / "a" / "manifest.json").read_text())
    assert {k: manifest["stages"][k]["finished"] for k in done_before} == done_before  # sft, dpo not rerun
    grpo = manifest["stages"]["grpo"]["metrics"]
    assert grpo["resumed_from_step"] == saved and grpo["global_step"] == 6
    report = (runs / "a" / "report.html").read_text()
    assert "Preference and RL signals" in report

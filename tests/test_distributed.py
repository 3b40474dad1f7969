"""llamak's own launcher with real processes on CPU (gloo): a recipe's training stages on 2
processes (DDP and DeepSpeed ZeRO-3), kill -9 of a rank and the resume, sharded loading, the
Slurm path on two stand-in nodes of this machine, and the launch settings' rules.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_llama, make_llama3_model
from helpers import free_port, state

from llamak.errors import LlamakError
from llamak.launch import Launch, LaunchSettings, Rendezvous, agent_command, env_settings, rendezvous, resolve_launch, root_cause

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
LLAMAK = [sys.executable, "-m", "llamak.cli"]
TRAINED = ["cpt", "sft", "dpo", "grpo", "longpo"]


def env(**extra) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "FSDP_", "SLURM_", "LLAMAK_SHARDING"))}
    for k in ("WORLD_SIZE", "RANK", "NPROC_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        clean.pop(k, None)
    return clean | {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"} | extra


def llamak(*args, cwd=None, **extra):
    return subprocess.run([*LLAMAK, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env(**extra), timeout=900)


STEPS = {"max_steps": 2, "batch_size": 2, "logging_steps": 1, "save_steps": 1}


def training_recipe(path: Path, base: Path, instruct: Path, name: str, stages=TRAINED, launch: dict | None = None) -> Path:
    """tiny.yaml's training stages on a 4-layer test pair, two steps each, on the bundled data."""
    every = {
        "cpt": {"corpus": {"ko": [str(DATA / "ko/kolaw_constitution.jsonl")], "en": [str(DATA / "en/general.jsonl")]}, "seq_len": 64, **STEPS},
        "sft": {"dataset": [str(DATA / "sft/chat_ko.jsonl")], "seq_len": 64, **STEPS},
        "dpo": {"dataset": [str(DATA / "dpo/pref_ko.jsonl")], "seq_len": 64, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.2], **STEPS},
        "grpo": {"dataset": [str(DATA / "grpo/prompts_ko.jsonl")], "rewards": {"korean_only": 1.0, "format": 0.5}, "num_generations": 2,
                 "max_completion_length": 8, "beta": 0.04, **STEPS},
        # the input model writes its own pairs on rank 0 while rank 1 waits; then both train
        "longpo": {"synth": {"documents": [str(DATA / "ko/kobill.jsonl")], "max_documents": 2, "chunk_tokens": [32, 64], "long_tokens": 160,
                             "turns": 1, "questions": 2, "question_source": "template", "min_distinct_4grams": 0.0, "min_answer_chars": 0,
                             "max_new_tokens": 8}, **STEPS, "batch_size": 1},
    }
    recipe = {"name": name, "base": str(base), "instruct": str(instruct), "sample": [], "energy": False,
              "stages": [{"expand": {"blocks": 2}}] + [{k: every[k]} for k in stages if k == "cpt"] + [{"chat_vector": {"ratio": 1.0}}]
              + [{k: every[k]} for k in stages if k != "cpt"]}
    if launch:
        recipe["launch"] = launch
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory, llama3_tokenizer):
    root = tmp_path_factory.mktemp("pair")
    return make_llama3_model(root / "base", llama3_tokenizer, seed=1), make_llama3_model(root / "instruct", llama3_tokenizer, seed=2)


# --------------------------------------------------------------------------- the recipe on 2 processes


@pytest.fixture(scope="module")
def ddp_run(pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-run")
    recipe = training_recipe(root / "r.yaml", *pair, "launched")
    first = llamak("run", recipe, "--out", root / "runs", "--processes", "2", cwd=root)
    return root, recipe, first


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def test_every_training_stage_runs_on_two_processes(ddp_run):
    root, _, first = ddp_run
    assert first.returncode == 0, first.stderr[-4000:]
    stages = manifest(root / "runs" / "launched")["stages"]
    for name in TRAINED:
        assert stages[name]["launch"] == {"processes": 2, "nodes": 1, "sharding": "ddp", "world_size": 2}, name
        assert stages[name]["metrics"]["global_step"] == 2
        assert (root / "runs" / "launched" / f"{name}.logs" / "node-0").is_dir()
    for name in ("expand", "chat_vector"):  # surgery stays in the driver
        assert stages[name]["launch"] is None
    # both ranks fed data: more tokens than one process can see in 2 steps of 2 × 64-token rows
    assert stages["cpt"]["metrics"]["num_input_tokens_seen"] > 2 * 2 * 64


def test_final_model_loads_with_plain_transformers(ddp_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root, _, first = ddp_run
    assert first.returncode == 0, first.stderr[-4000:]
    final = root / "runs" / "launched" / "longpo"
    model = AutoModelForCausalLM.from_pretrained(final)
    ids = AutoTokenizer.from_pretrained(final)("서울", return_tensors="pt")["input_ids"]
    assert model.config.num_hidden_layers == 6 and torch.isfinite(model(ids).logits).all()


def test_rerun_skips_every_stage(ddp_run):
    root, recipe, first = ddp_run
    assert first.returncode == 0, first.stderr[-4000:]
    before = {k: v["finished"] for k, v in manifest(root / "runs" / "launched")["stages"].items()}
    again = llamak("run", recipe, "--out", root / "runs", "--processes", "2", cwd=root)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("up to date") == len(before) and "launching" not in again.stderr
    assert {k: v["finished"] for k, v in manifest(root / "runs" / "launched")["stages"].items()} == before


# --------------------------------------------------------------------------- ZeRO-3 on 2 CPU processes


@pytest.fixture(scope="module")
def zero3_run(pair, tmp_path_factory):
    """CPT (parameter counts of partitioned weights), DPO (a partitioned reference model) and LongPO
    (reference log-probs through a DeepSpeed inference engine) under ZeRO-3, from the recipe's launch:."""
    root = tmp_path_factory.mktemp("zero3-run")
    recipe = training_recipe(root / "r.yaml", *pair, "z3", stages=["cpt", "dpo", "longpo"], launch={"processes": 2, "sharding": "zero3"})
    return root, llamak("run", recipe, "--out", root / "runs", cwd=root)


def test_zero3_runs_the_stages_with_partitioned_weights(zero3_run):
    root, proc = zero3_run
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = manifest(root / "runs" / "z3")["stages"]
    for name in ("cpt", "dpo", "longpo"):
        assert stages[name]["launch"]["sharding"] == "zero3" and stages[name]["launch"]["world_size"] == 2
        assert stages[name]["metrics"]["sharding"] == "zero3"
    cpt = stages["cpt"]["metrics"]
    assert cpt["total_parameters"] > cpt["trainable_parameters"] > 0  # counted from ds_numel, not the empty local tensors


def test_zero3_cpt_equals_ddp_cpt(ddp_run, zero3_run):
    """The same two steps from the same expanded model: ZeRO-3's sharded update equals DDP's."""
    (ddp_root, _, ddp), (z3_root, z3) = ddp_run, zero3_run
    assert ddp.returncode == 0 and z3.returncode == 0
    a, b = state(ddp_root / "runs" / "launched" / "cpt"), state(z3_root / "runs" / "z3" / "cpt")
    changed = [k for k in a if not torch.equal(a[k], state(ddp_root / "runs" / "launched" / "expand")[k])]
    assert changed and all(".layers.2." in k or ".layers.5." in k for k in changed)  # only the inserted blocks
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


# --------------------------------------------------------------------------- a rank dies


@pytest.mark.parametrize("sharding", ["ddp", "zero3"])
def test_killed_rank_fails_the_stage_in_one_line_and_the_rerun_resumes(pair, tmp_path, sharding):
    """ddp resumes from the Trainer's checkpoint, zero3 from DeepSpeed's sharded one."""
    recipe = training_recipe(tmp_path / "r.yaml", *pair, "kill", stages=["cpt"], launch={"processes": 2, "sharding": sharding})
    data = yaml.safe_load(recipe.read_text())
    data["stages"][1]["cpt"].update(max_steps=12, save_steps=2)
    recipe.write_text(yaml.safe_dump(data, allow_unicode=True))
    checkpoints = tmp_path / "runs" / "kill" / "cpt.checkpoints"
    killed = []

    def kill_rank_one():
        deadline = time.time() + 600
        while time.time() < deadline and not (checkpoints / "checkpoint-4" / "trainer_state.json").is_file():
            time.sleep(0.2)
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"llamak.worker" in cmd and b"RANK=1" in environ and str(tmp_path).encode() in b" ".join(cmd):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    killer = threading.Thread(target=kill_rank_one)
    killer.start()
    failed = llamak("run", recipe, "--out", tmp_path / "runs", cwd=tmp_path)
    killer.join()
    assert killed, "rank 1 was never seen"
    assert failed.returncode == 2
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith("llamak: error: stage cpt: rank 1 of 2 died of SIGKILL"), line
    log_file = Path(line.split("its log: ")[1].split(";")[0])
    assert log_file.is_file() and log_file.parts[-2] == "1"
    assert "the rerun resumes from checkpoint-" in line

    resumed = llamak("run", recipe, "--out", tmp_path / "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = manifest(tmp_path / "runs" / "kill")["stages"]["cpt"]["metrics"]
    assert metrics["global_step"] == 12 and metrics["resumed_from_step"] >= 4


def test_a_user_error_on_the_ranks_is_quoted_in_one_line(pair, tmp_path):
    config = tmp_path / "cpt.yaml"
    config.write_text(yaml.safe_dump({"model": str(pair[0]), "out": str(tmp_path / "out"), "trainable": "inserted",
                                      "corpus": {"ko": [str(DATA / "ko/kolaw_constitution.jsonl")]}, "max_steps": 1}))
    proc = llamak("train", "cpt", config, "--processes", "2", cwd=tmp_path)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert re.search(r"stage cpt: rank [01] of 2 stopped: trainable: inserted, but the model has no inserted blocks", line), line
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- sharded loading

PROBE = """
import json, os, sys
from pathlib import Path
from trl import SFTConfig
from llamak.checkpoint import ModelDir
from llamak.train.common import TrainSettings, build_config, build_model
from llamak.train.sharding import current_sharding, prepare_process_group

prepare_process_group(current_sharding())
source = ModelDir.open(sys.argv[1])
args = build_config(SFTConfig, TrainSettings(), Path(sys.argv[2]) / "ckpt", source)
model, params = build_model(source, args, "all", TrainSettings())
local = [getattr(p, "ds_tensor", p) for p in model.parameters()]
report = {"rank": int(os.environ["RANK"]), "params": params["total_parameters"],
          "local_elements": sum(t.numel() for t in local), "local_bytes": sum(t.numel() * t.element_size() for t in local),
          "float32_elements": sum(t.numel() for t in local if t.dtype.is_floating_point and t.element_size() == 4),
          "full_tensors": sum(1 for p in model.parameters() if p.numel() == getattr(p, "ds_numel", -1))}
(Path(sys.argv[2]) / f"rank-{report['rank']}.json").write_text(json.dumps(report))
"""


@pytest.mark.parametrize("sharding", ["zero3", "ddp"])
def test_sharded_loading_holds_no_full_float32_copy(tmp_path, sharding):
    """A bf16 checkpoint built by llamak's one model builder on 2 processes: under ZeRO-3 each rank
    stores half the parameters, in bf16; replicated (DDP on a CPU) each holds all of them in float32."""
    model = make_llama(tmp_path / "bf16", layers=4, hidden=64, vocab=512, dtype=torch.bfloat16)
    (tmp_path / "probe.py").write_text(PROBE)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
                           str(tmp_path / "probe.py"), str(model), str(tmp_path)],
                          capture_output=True, text=True, env=env(LLAMAK_SHARDING=sharding), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in (0, 1)]
    total = ranks[0]["params"]
    if sharding == "zero3":
        for r in ranks:
            assert r["local_elements"] <= total / 2 + 1024  # its partition (padded to the world size)
            assert r["float32_elements"] == 0 and r["local_bytes"] <= total + 2048  # bf16: 2 bytes each
            assert r["full_tensors"] == 0
        assert sum(r["local_elements"] for r in ranks) >= total
    else:
        assert all(r["local_elements"] == total == r["float32_elements"] for r in ranks)


def test_rank_memory_bench_prints_its_json(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "rank_memory.py"), "--synthetic", "30M", "--processes", "2",
                           "--sharding", "zero3", "--work", str(tmp_path)], capture_output=True, text=True, env=env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["sharding"] == "zero3" and len(result["rank_peak_bytes"]) == 2 == len(result["baseline_peak_bytes"])
    assert all(p > 100e6 for p in result["rank_peak_bytes"] + result["baseline_peak_bytes"])  # real processes were measured
    assert result["model_bytes"] > 0


# --------------------------------------------------------------------------- LongPO with sequence parallelism

RECORD = {
    "long_context": "대한민국 헌법 제1조 대한민국은 민주공화국이다. " * 6 + "한강은 서울을 가로질러 흐른다. " * 6,
    "turns": [{"chunk": "한강은 서울을 가로질러 흐른다.", "question": "앞의 글에 따르면 한강은 어디를 흐르나요?",
               "chosen": "한강은 서울을 가로질러 흐릅니다.", "rejected": "대한민국은 민주공화국입니다."}],
}


def test_longpo_sequence_parallel_2_equals_1(pair, tmp_path):
    """Ulysses SP=2 on 2 processes against SP=1 on one, both ZeRO-3, one SGD step without clipping
    (Adam's first step would hide a wrong gradient scale): the same loss terms and the same
    updated weights — each rank saw half of every sequence and only its slice's log-probs."""
    (tmp_path / "pairs.jsonl").write_text(json.dumps(RECORD, ensure_ascii=False) + "\n")
    runs = {}
    for sp in (1, 2):
        config = tmp_path / f"sp{sp}.yaml"
        config.write_text(yaml.safe_dump({
            "model": str(pair[0]), "out": str(tmp_path / f"sp{sp}"), "pairs": str(tmp_path / "pairs.jsonl"), "sequence_parallel": sp,
            "max_steps": 1, "logging_steps": 1, "learning_rate": 0.5, "beta": 0.5, "pref_weight": 1.0,
            "trainer": {"optim": "sgd", "max_grad_norm": 0.0},
        }))
        proc = llamak("train", "longpo", config, "--processes", sp, "--sharding", "zero3", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[sp] = json.loads((tmp_path / f"sp{sp}" / "llamak.json").read_text())["metrics"]
    one, two = (runs[sp]["log_history"][0] for sp in (1, 2))
    # per-sequence sums of ~10² float32 log-probs, added in two halves instead of one pass: ~1e-5 apart
    for key in ("loss", "nll", "pref_loss", "rewards/margins"):
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-4), key
    before, a, b = state(pair[0]), state(tmp_path / "sp1"), state(tmp_path / "sp2")
    moved = max((a[k] - before[k]).abs().max().item() for k in a)
    differ = max((a[k] - b[k]).abs().max().item() for k in a)
    assert moved > 1e-2 and differ < 1e-5 * max(moved, 1.0), (moved, differ)  # measured: moved 0.6, differ 6e-8


# --------------------------------------------------------------------------- Slurm: two nodes of this machine

# srun stand-in: one copy of the command per node, in parallel, each with its SLURM_NODEID
SRUN = """#!/bin/bash
nodes=1
while [[ "$1" == --* ]]; do case "$1" in --nodes=*) nodes=${1#--nodes=};; esac; shift; done
pids=()
for i in $(seq 0 $((nodes-1))); do SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc
"""


def test_slurm_sbatch_runs_the_recipe_across_two_nodes(pair, tmp_path):
    """recipes/slurm/llama-k-70b.sbatch in a stand-in 2-node allocation: the driver runs once, each
    training stage starts one torchrun agent per node through srun, and they meet at node 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(SRUN)
    (bin_dir / "scontrol").write_text('#!/bin/bash\n[ "$1 $2" = "show hostnames" ] && printf "127.0.0.1\\n127.0.0.1\\n"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    recipe = training_recipe(tmp_path / "r.yaml", *pair, "slurm", stages=["cpt"])
    allocation = {"SLURM_JOB_ID": "42", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "node[1-2]", "GPUS_PER_NODE": "1",
                  "LLAMAK": str(Path(sys.executable).parent / "llamak"), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "recipes" / "slurm" / "llama-k-70b.sbatch"), str(recipe), "--out", str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True, env=env(**allocation), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    cpt = manifest(tmp_path / "runs" / "slurm")["stages"]["cpt"]
    assert cpt["launch"] == {"processes": 1, "nodes": 2, "sharding": "ddp", "world_size": 2}
    assert sorted(p.name for p in (tmp_path / "runs" / "slurm" / "cpt.logs").glob("node-*")) == ["node-0", "node-1"]
    assert cpt["metrics"]["num_input_tokens_seen"] > 2 * 2 * 64  # both nodes' ranks trained


# --------------------------------------------------------------------------- the rules


def test_launch_settings_precedence():
    recipe = LaunchSettings(processes=8, nodes=4, sharding="zero3")
    stage = LaunchSettings(sharding="fsdp2")
    assert resolve_launch(recipe, stage) == Launch(8, 4, "fsdp2")
    assert resolve_launch(recipe, stage, LaunchSettings(processes=2)) == Launch(2, 4, "fsdp2")
    assert resolve_launch(recipe, None, env_settings({"NPROC_PER_NODE": "4", "NNODES": "1"})) == Launch(4, 1, "zero3")
    assert resolve_launch() == Launch(1, 1, "none") and not Launch().launched
    assert resolve_launch(LaunchSettings(processes=2)).sharding == "ddp"  # replicas without sharding
    assert Launch(1, 1, "zero3").launched  # one process, sharded (e.g. offload): still its own process
    with pytest.raises(LlamakError, match="NNODES='x'"):
        env_settings({"NNODES": "x"})


def test_root_cause_prefers_the_killed_rank_over_its_peers():
    failures = [{"rank": 0, "exitcode": 1, "timestamp": 1}, {"rank": 1, "exitcode": -9, "timestamp": 2},
                {"rank": 2, "exitcode": -15, "timestamp": 0}]
    assert root_cause(failures)["rank"] == 1
    assert root_cause([{"rank": 0, "exitcode": -15, "timestamp": 0}, {"rank": 1, "exitcode": 1, "timestamp": 5}])["rank"] == 1
    assert root_cause([{"rank": 3, "exitcode": 2, "timestamp": 9}, {"rank": 1, "exitcode": 1, "timestamp": 1}])["rank"] == 3


def test_rendezvous_outside_slurm_needs_the_usual_variables():
    with pytest.raises(LlamakError, match="set NODE_RANK, MASTER_ADDR, MASTER_PORT"):
        rendezvous(Launch(8, 2, "zero3"), {})
    rdzv = rendezvous(Launch(8, 2, "zero3"), {"NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert rdzv == Rendezvous("10.0.0.1", 29500, "1")


def test_srun_command_gives_each_node_its_own_rank_and_logs(tmp_path):
    command = agent_command(Launch(8, 4, "zero3"), Rendezvous("gpu-a01", 29500, "$SLURM_NODEID"), tmp_path / "logs", tmp_path / "spec.json")
    assert command[:5] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    script = command[-1]
    assert '--node-rank "$SLURM_NODEID"' in script and f'"{tmp_path}/logs/node-$SLURM_NODEID"' in script
    assert "--nnodes 4 --nproc-per-node 8" in script and "--master-addr gpu-a01 --master-port 29500" in script


def test_bad_launch_values_are_one_line_errors(pair, tmp_path):
    recipe = training_recipe(tmp_path / "r.yaml", *pair, "bad", stages=["cpt"], launch={"processes": 0})
    proc = llamak("run", recipe, "--dry-run")
    assert proc.returncode == 2 and "field 'launch.processes'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = llamak("run", training_recipe(tmp_path / "r2.yaml", *pair, "bad2", stages=["cpt"]), "--sharding", "zero4", "--dry-run")
    assert proc.returncode == 2 and "--sharding 'zero4'" in proc.stderr
    proc = llamak("run", training_recipe(tmp_path / "r3.yaml", *pair, "bad3", stages=["cpt"]), "--sharding", "fsdp2", "--out", tmp_path / "runs")
    assert proc.returncode == 2 and "fsdp2 needs GPUs" in proc.stderr.strip().splitlines()[-1]
    proc = llamak("run", training_recipe(tmp_path / "r4.yaml", *pair, "bad4", stages=["cpt"]), "--nodes", "2", "--out", tmp_path / "runs")
    assert proc.returncode == 2 and "launches on 2 nodes through Slurm" in proc.stderr.strip().splitlines()[-1]

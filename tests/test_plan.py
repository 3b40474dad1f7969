"""The planner against hand calculations, and `llamak run --dry-run` / `llamak plan` as users run them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llamak.errors import LlamakError
from llamak.planner import Hardware, plan, read_shape
from llamak.shape import Shape
from llamak.recipe import dry_run, load_recipe

ROOT = Path(__file__).resolve().parent.parent

# Llama-3.1-70B by hand: per layer q, o 8192² each; k, v 8192×1024 each; gate, up, down 8192×28672
# each; two norms of 8192 → 855,654,400. Embeddings and lm_head 128,256 × 8192 each, final norm 8192.
LAYER_70B = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
EMBED_70B = 128256 * 8192
N_70B = 80 * LAYER_70B + 2 * EMBED_70B + 8192
# Llama-3.1-8B: q, o 4096²; k, v 4096×1024; MLP 3 × 4096×14336; norms.
N_8B = 32 * (2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 2 * 128256 * 4096 + 4096


def write_recipe(tmp_path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_shipped_configs_give_the_published_parameter_counts():
    assert LAYER_70B == 855_654_400 and N_70B == 70_553_706_496  # "70.6B"
    assert N_8B == 8_030_261_248  # "8.03B"
    assert read_shape("meta-llama/Llama-3.1-70B", "base").total == N_70B
    assert read_shape("meta-llama/Llama-3.1-8B-Instruct", "instruct").total == N_8B


def test_70b_expand_16_cpt_of_inserted_blocks(tmp_path):
    recipe = write_recipe(tmp_path, f"""
name: plan-70b
base: meta-llama/Llama-3.1-70B
stages:
  - expand: {{blocks: 16}}
  - cpt: {{trainable: inserted, corpus: {{ko: ["{ROOT}/data/ko/*.jsonl"]}}, seq_len: 4096, batch_size: 1, grad_accum: 4,
           max_steps: 1000, gradient_checkpointing: true}}
""")
    result = plan(*load_recipe(recipe), Hardware(gpus=64, gpu_memory_gb=80, peak_tflops=989, mfu=0.4, tdp_watts=700))
    expand, cpt = result["stages"]
    n, trainable = N_70B + 16 * LAYER_70B, 16 * LAYER_70B  # 80 → 96 layers; only the 16 new blocks train
    assert (expand["layers"], expand["params"]) == (96, n) == (96, 84_244_176_896)
    assert expand["disk_gb"] == pytest.approx(2 * n / 1e9)
    assert cpt["trainable"] == trainable == 13_690_470_400
    tokens = 1000 * 1 * 4 * 64 * 4096  # steps × micro-batch × accumulation × GPUs × sequence
    assert cpt["tokens"] == tokens
    # Memory per GPU (bytes): frozen bf16 weights 2 B; trainable 2 + 2 (grad) + 12 (fp32 master, Adam m, v).
    memory = cpt["memory_gb"]
    assert memory["weights"] == pytest.approx(2 * n / 64 / 1e9, abs=0.01)
    assert memory["gradients"] == pytest.approx(2 * trainable / 64 / 1e9, abs=0.01)
    assert memory["optimizer"] == pytest.approx(12 * trainable / 64 / 1e9, abs=0.01)
    # checkpointed activations: each layer's input (96 × 2 × 4096 × 8192) + one layer's working set
    # 2 × 4096 × (8·8192 + 2·1024 + 5·28672); logits 4096 × 128,256 × (2 + 4); gathered: 2 layers + embeddings
    assert memory["activations"] == pytest.approx((96 * 2 * 4096 * 8192 + 2 * 4096 * (8 * 8192 + 2 * 1024 + 5 * 28672)) / 1e9, abs=0.01)
    assert memory["logits"] == pytest.approx(4096 * 128256 * 6 / 1e9, abs=0.01)
    assert memory["gathered"] == pytest.approx(2 * (2 * LAYER_70B + EMBED_70B) / 1e9, abs=0.01)
    assert cpt["per_gpu_gb"] == pytest.approx(22.47, abs=0.01) and cpt["fits"] == "yes"
    # FLOPs per token: 6·N_trainable + 4·N_frozen (no embedding lookup) + causal attention 3 × 2·L·s·d
    # + the recomputed forward (2·N + 2·L·s·d)
    dense = n - EMBED_70B
    attention = 2 * 96 * 4096 * 64 * 128
    per_token = 6 * trainable + 4 * (dense - trainable) + 3 * attention + 2 * dense + attention
    assert per_token == 552_311_767_040
    assert cpt["pflops"] == pytest.approx(per_token * tokens / 1e15)
    gpu_hours = per_token * tokens / (989e12 * 0.4) / 3600
    assert cpt["gpu_hours"] == pytest.approx(gpu_hours) and round(gpu_hours) == 407
    assert cpt["hours"] == pytest.approx(gpu_hours / 64)
    assert cpt["energy_kwh"] == pytest.approx(gpu_hours * 0.7)
    assert cpt["disk_gb"] == pytest.approx((2 * n + 2 * (2 * n + 12 * trainable)) / 1e9)  # output + 2 checkpoints


def test_8b_sft_all_parameters_and_what_does_not_fit(tmp_path):
    recipe = write_recipe(tmp_path, f"""
name: plan-8b
base: meta-llama/Llama-3.1-8B-Instruct
stages:
  - sft: {{dataset: ["{ROOT}/data/sft/*.jsonl"], seq_len: 4096, batch_size: 2, grad_accum: 4, max_steps: 500, gradient_checkpointing: true}}
""")
    hw = Hardware(gpus=8, gpu_memory_gb=80, peak_tflops=989, mfu=0.4)
    sft = plan(*load_recipe(recipe), hw)["stages"][0]
    assert sft["trainable"] == sft["params"] == N_8B
    states = sft["memory_gb"]["weights"] + sft["memory_gb"]["gradients"] + sft["memory_gb"]["optimizer"]
    assert states == pytest.approx(16 * N_8B / 8 / 1e9, abs=0.02)  # 16.06 GB
    assert sft["tokens"] == 500 * 2 * 4 * 8 * 4096
    dense = N_8B - 128256 * 4096
    attention = 2 * 32 * 4096 * 32 * 128
    per_token = 6 * dense + 3 * attention + 2 * dense + attention
    assert sft["gpu_hours"] == pytest.approx(per_token * sft["tokens"] / (989e12 * 0.4) / 3600)
    assert sft["fits"] == "yes"
    # On one GPU the same stage does not fit (128 GB of states), not even by splitting the sequence
    alone = plan(*load_recipe(recipe), Hardware(gpus=1, gpu_memory_gb=80))["stages"][0]
    assert alone["fits"] == "no: more GPUs or offload"
    offloaded = plan(*load_recipe(recipe), Hardware(gpus=2, gpu_memory_gb=80, offload=True))["stages"][0]
    assert offloaded["memory_gb"]["optimizer"] == 0


def test_70b_recipe_dry_run_offline_and_plan(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lines = dry_run(ROOT / "recipes" / "llama-k-70b.yaml")
    assert lines[-1].startswith("dry run OK")
    assert any("expand" in line and "96 layers" in line for line in lines)
    result = plan(*load_recipe(ROOT / "recipes" / "llama-k-70b.yaml"), Hardware(gpus=64))
    by_type = {r["type"]: r for r in result["stages"]}
    assert by_type["cpt"]["trainable"] == 16 * LAYER_70B
    assert by_type["longpo"]["seq_len"] >= 131072 and by_type["longpo"]["fits"] == "yes: sequence parallel ×16"
    assert by_type["longpo"]["sequence_parallel"] == 16 and by_type["longpo"]["gpus"] == 64 and by_type["longpo"]["sharding"] == "zero3"
    assert result["totals"]["gpu_hours"] > 0
    # without sequence parallelism the 128K stage does not fit, and the planner says what would
    recipe, stages = load_recipe(ROOT / "recipes" / "llama-k-70b.yaml")
    stages = [s if s.type != "longpo" else type(s)(s.type, s.name, s.config.model_copy(update={"sequence_parallel": 1})) for s in stages]
    unsplit = {r["type"]: r for r in plan(recipe, stages, Hardware(gpus=64))["stages"]}["longpo"]
    assert unsplit["fits"] == "no: sequence parallel ×16" and unsplit["per_gpu_gb"] == by_type["longpo"]["per_gpu_gb"]


@pytest.mark.parametrize(
    "stages, message",
    [
        ("  - expand: {blocks: 7}", "stage 1 (expand): field 'blocks' 7 must divide"),
        ("  - cpt: {trainable: inserted, corpus: {ko: [data/ko/*.jsonl]}}", "stage 1 (cpt): field 'trainable': 'inserted' needs an expanded input"),
        ("  - expand: {blocks: 2}\n  - merge: {method: slerp, models: [base, expand], t: 0.5}", "stage 2 (merge): models 'base' (4 layers"),
        ("  - expand: {after: [9]}", "stage 1 (expand): field 'after' 9: layer indices must be in 0..3"),
        ("  - sft: {dataset: [data/sft/*.jsonl], sequence: 5}", "stage 1 (sft): field 'sequence': Extra inputs are not permitted"),
        ("  - cpt: {trainable: new_embeddings, corpus: {ko: [data/ko/*.jsonl]}}", "stage 1 (cpt): field 'trainable': 'new_embeddings' needs a vocab stage"),
        ("  - vocab: {add: 10, data: x, corpus: [data/ko/*.jsonl]}", "stage 1 (vocab)"),
        ("  - expand: {blocks: 2}\n  - vocab: {add: 10, data: expand}", "stage 2 (vocab): data 'expand' must name a `data` stage"),
        ("  - longpo: {synth: {documents: [data/ko/*.jsonl]}, sequence_parallel: 3, launch: {processes: 3, sharding: zero3}}",
         "stage 1 (longpo): field 'sequence_parallel': 3 must divide the model's 4 attention heads"),
        ("  - longpo: {synth: {documents: [data/ko/*.jsonl]}, sequence_parallel: 2, launch: {processes: 3, sharding: zero3}}",
         "field 'sequence_parallel': 2 does not divide the stage's 3 processes"),
        ("  - longpo: {synth: {documents: [data/ko/*.jsonl]}, sequence_parallel: 2, launch: {processes: 2}}",
         "field 'sequence_parallel': needs sharding zero3 (DeepSpeed Ulysses), the stage launches with ddp"),
    ],
)
def test_broken_recipes_name_stage_and_field(tmp_path, stages, message):
    recipe = write_recipe(tmp_path, f"name: broken\nbase: zoo:tiny-base\ninstruct: zoo:tiny-instruct\nstages:\n{stages}\n")
    with pytest.raises(LlamakError) as e:
        dry_run(recipe)
    assert message in str(e.value)


def test_plan_and_dry_run_commands(tmp_path):
    def llamak(*args):
        return subprocess.run([sys.executable, "-m", "llamak.cli", *args], capture_output=True, text=True, timeout=300, cwd=ROOT)

    r = llamak("plan", "recipes/tiny.yaml", "--gpus", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "cpt" in r.stdout and "GPU-hours" in r.stdout
    saved = json.loads((tmp_path / "tiny-ko" / "plan.json").read_text())
    assert [s["name"] for s in saved["stages"]][:3] == ["data", "expand", "cpt"]
    r = llamak("run", "recipes/tiny.yaml", "--dry-run", "--out", str(tmp_path))
    assert r.returncode == 0 and "dry run OK: 11 stages" in r.stdout
    assert not (tmp_path / "tiny-ko" / "manifest.json").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: zoo:tiny-base\nstages:\n  - expand: {blocks: 3}\n")
    r = llamak("run", str(bad), "--dry-run")
    assert r.returncode == 2 and "stage 1 (expand)" in r.stderr and "Traceback" not in r.stderr


def test_report_shows_the_plan(tmp_path):
    from llamak.report.html import write_report

    run = tmp_path / "tiny-ko"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps({"name": "tiny-ko", "stages": {}, "order": []}))
    result = plan(*load_recipe(ROOT / "recipes" / "tiny.yaml"), Hardware(gpus=1))
    (run / "plan.json").write_text(json.dumps(result))
    page = write_report(run).read_text()
    assert "<h2>Plan</h2>" in page and "GPU-hours" in page


def test_shape_trainable_modes():
    shape = Shape.from_config({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "vocab_size": 100}, inserted=1)
    assert shape.trainable("inserted") == shape.per_layer
    q, kv, h, i = 64, 32, 64, 128  # LoRA r=16 on q, k, v, o, gate, up, down of 4 layers
    assert shape.trainable("lora", 16) == 4 * 16 * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    with pytest.raises(LlamakError):
        shape.trainable("half")
    grown = Shape.from_config({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
                               "num_key_value_heads": 2, "vocab_size": 130}, inserted=1)
    grown = type(grown)(**{**grown.__dict__, "added_tokens": 30})
    assert grown.trainable("new_embeddings") == 2 * 30 * 64  # untied: embed_tokens and lm_head rows
    assert grown.trainable(["new_embeddings", "inserted"]) == 2 * 30 * 64 + grown.per_layer


def test_smollm2_ko_recipes_dry_run():
    for name, count in [("smollm2-ko", 12), ("smollm2-ko-novocab", 9), ("smollm2-ko-gpu", 12)]:
        assert dry_run(ROOT / "recipes" / f"{name}.yaml")[-1] == f"dry run OK: {count} stages; nothing was run"


def test_unknown_hub_model_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = write_recipe(tmp_path, "name: x\nbase: someorg/not-shipped-7b\nstages:\n  - expand: {blocks: 2}\n")
    with pytest.raises(LlamakError, match="stage 1 \\(expand\\): model someorg/not-shipped-7b: no shipped config and the hub is unreachable"):
        dry_run(recipe)


def test_data_stage_executor_is_checked_and_does_not_change_the_stage_hash(tmp_path):
    from llamak.recipe import stage_hash

    text = "name: d\nbase: zoo:tiny-base\nstages:\n  - data: {inputs: [data/ko/*.jsonl], executor: %s}\n"
    _, local = load_recipe(write_recipe(tmp_path, text % "local"))
    _, ray = load_recipe(write_recipe(tmp_path, text % "ray"))
    assert stage_hash(local[0], "x", []) == stage_hash(ray[0], "x", [])
    with pytest.raises(LlamakError, match="stage 1 \\(data\\): field 'executor'"):
        load_recipe(write_recipe(tmp_path, text % "slurm"))

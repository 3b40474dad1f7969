"""`accelerate launch` by hand for llamak: the shipped accelerate configs (recipes/accelerate/) as
accelerate itself reads them, and a real 2-process DDP run (gloo on CPU) of a CPT stage through
`accelerate launch -m llamak.cli`. llamak's own launcher (`--processes`, `launch:`), which reads the
same files, is tested in test_distributed.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_llama3_model
from helpers import expand_with_tokenizer, state

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate"
ACCELERATE = Path(sys.executable).parent / "accelerate"

# What each shipped file is meant to say (a new file needs an entry here).
DEEPSPEED_ZERO3 = {"zero_stage": 3, "zero3_init_flag": True, "zero3_save_16bit_model": True}
NO_OFFLOAD = {"offload_optimizer_device": "none", "offload_param_device": "none"}
GPU_NODE = {"distributed_type": "DEEPSPEED", "num_processes": 8, "num_machines": 1, "mixed_precision": "bf16"}
EXPECTED = {
    "zero3.yaml": GPU_NODE | {"deepspeed": DEEPSPEED_ZERO3 | NO_OFFLOAD},
    "zero3_offload.yaml": GPU_NODE | {"deepspeed": DEEPSPEED_ZERO3 | {"offload_optimizer_device": "cpu", "offload_param_device": "cpu"}},
    "zero3_multinode.yaml": GPU_NODE | {
        "num_processes": 32, "num_machines": 4,
        "deepspeed": DEEPSPEED_ZERO3 | NO_OFFLOAD | {"deepspeed_multinode_launcher": "standard"},
    },
    "fsdp2.yaml": GPU_NODE | {
        "distributed_type": "FSDP",
        "fsdp": {
            "fsdp_version": 2, "fsdp_reshard_after_forward": True, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer", "fsdp_state_dict_type": "SHARDED_STATE_DICT",
            "fsdp_activation_checkpointing": True, "fsdp_cpu_ram_efficient_loading": True, "fsdp_offload_params": False,
            "fsdp_sync_module_states": True,
        },
    },
    "ddp_cpu.yaml": {"distributed_type": "MULTI_GPU", "num_processes": 2, "num_machines": 1, "mixed_precision": "no"},
}

# accelerate's `launch` reads its config from os.environ (ACCELERATE_*, FSDP_*); a developer's own
# settings must not leak into what these tests check.
ACCELERATE_ENV_PREFIXES = ("ACCELERATE_", "FSDP_")


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ACCELERATE_ENV_PREFIXES)}
    return env | {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"} | extra


def launch_args(config: Path, *script: str, cli: tuple[str, ...] = ()):
    """`accelerate launch` as the command line would set it up: parsed, defaults from the config
    file applied (accelerate's own `_validate_launch_command`)."""
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )

    args = launch_command_parser().parse_args(["--config_file", str(config), *cli, *script])
    args, defaults, mp_from_config = _validate_launch_command(args)
    return args, defaults, mp_from_config


def launcher_env(args, defaults, mp_from_config, monkeypatch) -> dict:
    """The environment accelerate's launcher would hand each process (what the plugins read)."""
    import accelerate.utils.launch as launch_utils
    from accelerate.utils import DistributedType
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    monkeypatch.setattr(launch_utils, "is_port_in_use", lambda port: False)  # no socket checks in a unit test
    if defaults.distributed_type == DistributedType.DEEPSPEED:
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)  # as launch_command does
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return env


def use_env(monkeypatch, env: dict) -> None:
    for key in [k for k in os.environ if k.startswith(ACCELERATE_ENV_PREFIXES)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(ACCELERATE_ENV_PREFIXES):
            monkeypatch.setenv(key, value)


def test_every_shipped_config_has_expectations():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_with_accelerate_and_says_what_it_means(name):
    from accelerate.commands.config.config_args import (
        ClusterConfig,
        load_config_from_file,
    )
    from accelerate.commands.launch import launch_command_parser

    path = CONFIGS / name
    config = load_config_from_file(str(path))  # unknown top-level keys are an error here
    want = EXPECTED[name]
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == want["distributed_type"]
    assert (config.num_processes, config.num_machines, config.mixed_precision) == (want["num_processes"], want["num_machines"], want["mixed_precision"])
    assert config.deepspeed_config == want.get("deepspeed", {})
    assert config.fsdp_config == want.get("fsdp", {})
    # Nested keys are not checked by the parser: `accelerate launch` copies each onto its own
    # argument of the same name (fsdp_config keys with an `fsdp_` prefix) and ignores the rest,
    # so a misspelt key would be silently dropped. Every key must be a launch argument.
    dests = {action.dest for action in launch_command_parser()._actions}
    nested = [*config.deepspeed_config, *(k if k.startswith("fsdp_") else f"fsdp_{k}" for k in config.fsdp_config)]
    assert not [key for key in nested if key not in dests]
    text = path.read_text()
    assert text.startswith("#") and "accelerate launch --config_file recipes/accelerate/" + name in text
    assert "-m llamak.cli train cpt" in text and "-m llamak.cli run recipes/" in text and "srun" in text


@pytest.mark.parametrize("name", ["zero3.yaml", "zero3_offload.yaml", "zero3_multinode.yaml"])
def test_deepspeed_plugin_from_the_launch_environment(name, monkeypatch):
    """The launch path up to accelerate's DeepSpeedPlugin (which needs no deepspeed package)."""
    from accelerate.utils import DeepSpeedPlugin

    want = EXPECTED[name]["deepspeed"]
    args, defaults, mp = launch_args(CONFIGS / name, "-m", "llamak.cli", "train", "cpt", "cpt.yaml")
    assert args.use_deepspeed and not args.multi_gpu and args.module and args.training_script == "llamak.cli"
    env = launcher_env(args, defaults, mp, monkeypatch)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert args.nproc_per_node == str(EXPECTED[name]["num_processes"] // EXPECTED[name]["num_machines"]) == "8"
    use_env(monkeypatch, env)
    plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert zero["stage"] == 3 and plugin.zero3_init_flag is True
    assert zero["offload_optimizer"]["device"] == want["offload_optimizer_device"]
    assert zero["offload_param"]["device"] == want["offload_param_device"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    # batch size and accumulation are left to the Trainer (the stage's batch_size / grad_accum)
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == "auto"


def test_multinode_config_gives_torchrun_one_node_rank_each(monkeypatch):
    name = CONFIGS / "zero3_multinode.yaml"
    for rank in range(4):
        args, defaults, mp = launch_args(name, "-m", "llamak.cli", "run", "r.yaml",
                                         cli=("--machine_rank", str(rank), "--main_process_ip", "node-0"))
        launcher_env(args, defaults, mp, monkeypatch)  # sets torchrun's node arguments on args
        assert args.deepspeed_multinode_launcher == "standard" and args.rdzv_backend == "static"
        assert (args.nnodes, args.node_rank, args.nproc_per_node) == ("4", rank, "8")
        assert args.rdzv_endpoint == "node-0:29500"  # torchrun's static rendezvous at node 0


def test_fsdp2_plugin_from_the_launch_environment(monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import StateDictType
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    args, defaults, mp = launch_args(CONFIGS / "fsdp2.yaml", "-m", "llamak.cli", "train", "cpt", "cpt.yaml")
    assert args.use_fsdp and args.module
    env = launcher_env(args, defaults, mp, monkeypatch)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2" and env["ACCELERATE_MIXED_PRECISION"] == "bf16"
    use_env(monkeypatch, env)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type == StateDictType.SHARDED_STATE_DICT
    assert plugin.activation_checkpointing and plugin.cpu_ram_efficient_loading
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    # the class name resolves on a real Llama: the policy wraps exactly its decoder layers
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1))
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)  # what accelerate's FSDP2 prepare applies
    wrapped = [m for m in model.modules() if policy(m)]
    assert len(wrapped) == 2 and all(isinstance(m, LlamaDecoderLayer) for m in wrapped)


# --- 2 processes on CPU: torch.distributed on gloo, through `accelerate launch` ------------------

# `--multi_gpu` (distributed_type MULTI_GPU in ddp_cpu.yaml) makes accelerate start torchrun with
# num_processes workers; without a CUDA device the processes join a gloo group — as long as the
# state is created with cpu=True, which is what the Trainer does on CPU (use_cpu) and what llamak's
# own barriers must do too. `--cpu --num_processes 2` would start one process (several need mpirun).
DDP_CPU = [str(ACCELERATE), "launch", "--config_file", str(CONFIGS / "ddp_cpu.yaml")]

PROBE = """
import json, sys
from pathlib import Path
from accelerate import PartialState
import torch.distributed as dist
from llamak.recipe import Processes
from llamak.train.common import checkpoint_dir

out = Path(sys.argv[1])
checkpoint_dir(out / "stage", "fingerprint")   # as `llamak train` starts: its barrier needs a real process group
state = PartialState()
report = {"rank": state.process_index, "world": state.num_processes, "backend": dist.get_backend(), "distributed_type": str(state.distributed_type)}
PartialState._reset_state()              # as `llamak run` starts: Processes() comes first
procs = Processes()
report |= {"recipe_is_main": procs.is_main, "recipe_world": PartialState().num_processes}
(out / f"probe-{report['rank']}.json").write_text(json.dumps(report))  # a file each: two ranks' stdout lines can interleave
"""


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    (root / "probe.py").write_text(PROBE)
    proc = subprocess.run([*DDP_CPU, str(root / "probe.py"), str(root)], capture_output=True, text=True, env=clean_env(), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted((json.loads(f.read_text()) for f in root.glob("probe-*.json")), key=lambda r: r["rank"])


def test_ddp_cpu_config_gives_two_gloo_processes(probe):
    """llamak's checkpoint barrier runs in a 2-process gloo group (ranks 0 and 1)."""
    assert [(r["rank"], r["world"], r["backend"]) for r in probe] == [(0, 2, "gloo"), (1, 2, "gloo")]
    assert {r["distributed_type"] for r in probe} == {"DistributedType.MULTI_CPU"}


def test_recipe_processes_see_one_main_process_on_cpu(probe):
    assert [r["recipe_is_main"] for r in probe] == [True, False]
    assert [r["recipe_world"] for r in probe] == [2, 2]


KO = "대한민국은 민주공화국이다. 대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다. "
EN = "The Han River flows through Seoul and into the Yellow Sea, and its banks are lined with parks. "
STEPS, BATCH, SEQ = 4, 2, 64


@pytest.fixture(scope="module")
def ddp_cpt(tmp_path_factory, llama3_tokenizer):
    """A CPT stage of a LLaMA-Pro-expanded tiny model, trained by 2 DDP processes (gloo)."""
    root = tmp_path_factory.mktemp("ddp")
    base = make_llama3_model(root / "base", llama3_tokenizer, seed=3)
    expanded = expand_with_tokenizer(base, root / "expanded")
    # ~2,400 tokens: enough rows that neither rank runs out within 4 steps of 2 x 64-token rows
    (root / "ko.jsonl").write_text("".join(json.dumps({"text": KO * (1 + i % 3)}, ensure_ascii=False) + "\n" for i in range(24)))
    (root / "en.jsonl").write_text("".join(json.dumps({"text": EN * (1 + i % 3)}) + "\n" for i in range(24)))
    out = root / "runs" / "cpt"
    config = root / "cpt.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(expanded), "out": str(out), "trainable": "inserted",
        "corpus": {"ko": [str(root / "ko.jsonl")], "en": [str(root / "en.jsonl")]},
        "max_steps": STEPS, "seq_len": SEQ, "batch_size": BATCH, "save_steps": 1000, "logging_steps": 1, "learning_rate": 1e-2,
    }))
    proc = subprocess.run([*DDP_CPU, "-m", "llamak.cli", "train", "cpt", str(config)],
                          cwd=root, capture_output=True, text=True, env=clean_env(), timeout=600, check=False)
    return proc, expanded, out


def test_ddp_cpt_stage_trains_on_both_ranks_and_saves_once(ddp_cpt):
    proc, _, out = ddp_cpt
    assert proc.returncode == 0, proc.stderr[-4000:]
    # both ranks fed the same optimizer steps: the Trainer sums the tokens of all ranks (a gather),
    # and one process can consume at most max_steps x batch_size x seq_len of them
    metrics = json.loads((out / "llamak.json").read_text())["metrics"]
    one_process_at_most = STEPS * BATCH * SEQ
    assert metrics["global_step"] == STEPS
    assert one_process_at_most < metrics["num_input_tokens_seen"] <= 2 * one_process_at_most, metrics["num_input_tokens_seen"]
    # the output exists once, complete: no partial/old copies from a second writer, checkpoints gone
    assert sorted(p.name for p in out.parent.iterdir()) == ["cpt"]
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_ddp_cpt_changes_only_the_inserted_blocks(ddp_cpt):
    proc, expanded, out = ddp_cpt
    assert proc.returncode == 0, proc.stderr[-4000:]
    layer_map = json.loads((out / "llamak.json").read_text())["layer_map"]
    inserted = tuple(f"model.layers.{i}." for i, entry in enumerate(layer_map) if entry["origin"] == "inserted")
    assert len(inserted) == 2
    before, after = state(expanded), state(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(inserted) for k in changed)
    for prefix in inserted:  # identity blocks start with zero o_proj/down_proj: those must have moved
        assert {prefix + "self_attn.o_proj.weight", prefix + "mlp.down_proj.weight"} <= changed

"""Merging: parity with mergekit on the same YAML, DARE statistics, layer maps, bad configs, recipe stage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import make_llama
from helpers import expand_with_tokenizer, load, random_ids, state
from safetensors.torch import save_file

from llamak.errors import LlamakError
from llamak.surgery.merge import merge
from llamak.surgery.merge_config import check_config
from llamak.surgery import merge_methods
from llamak.surgery.merge_methods import Pruning, kth_largest, task_arithmetic


def fine_tune(base, out, seed, shared_seed=99, scale=0.02):
    """base + a shared update + a private one: what sibling fine-tunes of one base look like."""
    shutil.copytree(base, out)
    tensors = state(base)
    shared, private = torch.Generator().manual_seed(shared_seed), torch.Generator().manual_seed(seed)
    for name, t in tensors.items():
        tensors[name] = t + scale * torch.randn(t.shape, generator=shared) + scale * torch.randn(t.shape, generator=private)
    for f in out.glob("*.safetensors"):
        f.unlink()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A base, three fine-tunes of it, and an unrelated model of the same shape."""
    root = tmp_path_factory.mktemp("merge")
    base = make_llama(root / "base", layers=4, hidden=32, seed=0)
    models = {"base": base, "other": make_llama(root / "other", layers=4, hidden=32, seed=7)}
    for i in (1, 2, 3):
        models[f"ft{i}"] = fine_tune(base, root / f"ft{i}", seed=i)
    return models


def write_config(path, text, models):
    for name, p in models.items():
        text = text.replace("{" + name + "}", str(p))
    path.write_text(text)
    return path


def run_mergekit(config_path, out, seed=None):
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    config = MergeConfiguration.model_validate(yaml.safe_load(config_path.read_text()))
    run_merge(config, str(out), MergeOptions(copy_tokenizer=False, write_model_card=False, random_seed=seed))
    return out


CONFIGS = {
    "linear": """
merge_method: linear
models:
  - model: {ft1}
    parameters: {weight: [{filter: self_attn, value: 0.7}, {value: 0.2}]}
  - model: {ft2}
    parameters: {weight: 0.5}
  - model: {other}
    parameters: {weight: [0.1, 0.9]}
dtype: float32
""",
    "task_arithmetic": """
merge_method: task_arithmetic
base_model: {base}
models:
  - model: {ft1}
    parameters: {weight: 1.0}
  - model: {ft2}
    parameters: {weight: -0.4}
parameters: {lambda: 0.8}
dtype: float32
""",
    "ties": """
merge_method: ties
base_model: {base}
models:
  - model: {ft1}
    parameters: {weight: 1.0, density: [0.2, 0.9]}
  - model: {ft2}
    parameters: {weight: 0.5, density: 0.5}
  - model: {ft3}
    parameters: {weight: 0.7, density: 0.3}
dtype: float32
""",
    "ties_unnormalised": """
merge_method: ties
base_model: {base}
models:
  - model: {ft1}
    parameters: {weight: 0.6, density: 0.5}
  - model: {other}
    parameters: {weight: [0.2, 0.8], density: 0.7}
parameters: {normalize: false, int8_mask: true}
dtype: float32
""",
    "slerp": """
merge_method: slerp
base_model: {base}
slices:
  - sources:
      - model: {base}
        layer_range: [0, 4]
      - model: {other}
        layer_range: [0, 4]
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
""",
    "slerp_near_parallel": """
merge_method: slerp
base_model: {base}
models:
  - model: {base}
  - model: {ft1}
parameters: {t: 0.3}
dtype: float32
""",
    "model_stock": """
merge_method: model_stock
base_model: {base}
models:
  - model: {ft1}
  - model: {ft2}
  - model: {ft3}
dtype: float32
""",
    "passthrough_stack": """
merge_method: passthrough
slices:
  - sources:
      - model: {ft1}
        layer_range: [0, 3]
  - sources:
      - model: {other}
        layer_range: [1, 4]
        parameters:
          scale:
            - filter: o_proj
              value: 0.0
            - value: 1.0
dtype: float32
""",
}


@pytest.mark.parametrize("chunk", [None, 100], ids=["one-block", "many-blocks"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_output_equals_mergekit_on_the_same_yaml(name, chunk, family, tmp_path, monkeypatch):
    if chunk:  # tiny tensors fit one block: force the multi-block path (whole-tensor stats over blocks)
        monkeypatch.setattr(merge_methods, "CHUNK_ELEMENTS", chunk)
    config = write_config(tmp_path / "merge.yaml", CONFIGS[name], family)
    ours = merge(config, tmp_path / "llamak", progress=False)
    theirs = run_mergekit(config, tmp_path / "mergekit")
    a, b = state(tmp_path / "llamak"), state(theirs)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-5, f"{name}: max abs diff {worst}"
    config_ours = json.loads((tmp_path / "llamak" / "config.json").read_text())
    config_theirs = json.loads((theirs / "config.json").read_text())
    assert config_ours["num_hidden_layers"] == config_theirs["num_hidden_layers"] == ours.num_layers
    if name == "model_stock":  # the merge moved: not a copy of the base, not the plain mean
        base = state(family["base"])
        assert all((a[k] - base[k]).abs().max() > 0 for k in a)


def test_passthrough_stack_loads_as_a_deeper_model(family, tmp_path):
    config = write_config(tmp_path / "m.yaml", CONFIGS["passthrough_stack"], family)
    merge(config, tmp_path / "out", progress=False, max_shard_bytes=40_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()  # sharded as it filled
    model = load(tmp_path / "out")
    assert model.config.num_hidden_layers == 6
    ft1 = state(family["ft1"])
    merged = state(tmp_path / "out")
    assert torch.equal(merged["model.layers.2.mlp.up_proj.weight"], ft1["model.layers.2.mlp.up_proj.weight"])
    assert not merged["model.layers.3.self_attn.o_proj.weight"].any()  # scale 0 by filter
    assert model(random_ids(length=7)).logits.isfinite().all()


def prune(delta, density, rescale, how="random", chunks=1):
    blocks = list(delta.chunk(chunks))
    pruning = Pruning(how, density, rescale, seed=1, index=0, delta_blocks=lambda: iter(blocks))
    return torch.cat([pruning(d, b) for b, d in enumerate(blocks)])


def test_dare_keeps_density_share_and_restores_l1_norm():
    delta = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    for density in (0.1, 0.5, 0.9):
        pruned = prune(delta, density, rescale=False, chunks=7)
        kept = (pruned != 0).float().mean().item()
        assert abs(kept - density) < 0.01
        assert torch.equal(pruned[pruned != 0], delta[pruned != 0])  # survivors untouched without rescale
        rescaled = prune(delta, density, rescale=True, chunks=7)
        assert torch.allclose(rescaled.abs().sum(), delta.abs().sum(), rtol=1e-4)
        assert torch.equal(rescaled != 0, pruned != 0)  # same mask, scaled by one factor
        factor = (rescaled[pruned != 0] / pruned[pruned != 0]).unique()
        # one factor, ≈ 1/kept share (the paper's 1/density up to the sampled share)
        assert torch.allclose(factor, factor[0].expand_as(factor)) and abs(factor[0].item() * kept - 1) < 0.03


def test_radix_select_finds_the_kth_largest_exactly():
    g = torch.Generator().manual_seed(0)
    values = torch.cat([torch.randn(50_000, generator=g).abs(), torch.zeros(5_000), torch.full((300,), 0.5)])
    values = values[torch.randperm(len(values), generator=g)]
    for k in (1, 7, 1000, 20_000, 50_100, 55_300):
        expected = torch.sort(values, descending=True).values[k - 1]
        assert kth_largest(lambda: iter(values.chunk(9)), k) == expected
    magnitude = prune(values - 0.25, 0.3, rescale=False, how="magnitude", chunks=5)
    assert (magnitude != 0).sum().item() == int(0.3 * len(values))


def test_ties_trims_to_density_and_elects_signs():
    base = torch.zeros(10)
    a = torch.tensor([5.0, -4, 3, 0.1, 0.2, 0, 0, 0, 1, -1])
    b = torch.tensor([-1.0, -2, 6, 0, 0, 0.3, 0, 0, -3, 2])
    out = task_arithmetic(base, a, b, weight=[1.0, 1.0], density=[0.4, 0.4], normalize=True, rescale=False,
                          sparsification="magnitude", consensus="sum")
    # a keeps 5, -4, 3, 1 (and -1: tie at the cut); b keeps -2, 6, -3, 2.
    # entry 0: only a (+5) survives; entry 1: both negative → mean(-4, -2) = -3; entry 2: mean(3, 6);
    # entry 8: votes +1 and -3 → negative wins, only b counts.
    assert out.tolist()[:3] == [5.0, -3.0, 4.5] and out[8].item() == -3.0 and out[3].item() == 0


def test_dare_is_seeded(family, tmp_path):
    text = """
merge_method: dare_ties
base_model: {base}
models:
  - model: {ft1}
    parameters: {weight: 0.5, density: 0.3}
  - model: {ft2}
    parameters: {weight: 0.5, density: 0.6}
"""
    config = write_config(tmp_path / "m.yaml", text, family)
    merge(config, tmp_path / "a", seed=3, progress=False)
    merge(config, tmp_path / "b", seed=3, progress=False, workers=1)
    merge(config, tmp_path / "c", seed=4, progress=False)
    a, b, c = (state(tmp_path / x) for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, other thread count: identical
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # dare_linear at density 1 is plain task arithmetic
    dense = write_config(tmp_path / "d.yaml", text.replace("dare_ties", "dare_linear").replace("0.3", "1").replace("0.6", "1"), family)
    plain = write_config(tmp_path / "t.yaml", text.replace("dare_ties", "task_arithmetic"), family)
    merge(dense, tmp_path / "dense", progress=False)
    merge(plain, tmp_path / "plain", progress=False)
    d, p = state(tmp_path / "dense"), state(tmp_path / "plain")
    assert all(torch.allclose(d[k], p[k]) for k in d)


def test_chat_vector_is_task_arithmetic(family, tmp_path):
    from llamak.surgery.chat_vector import chat_vector

    base, instruct, target = family["base"], family["ft1"], family["ft2"]
    chat_vector(base, instruct, target, tmp_path / "cv", ratio=0.7, progress=False)
    text = "merge_method: task_arithmetic\nbase_model: {base}\nmodels:\n  - model: {ft2}\n    parameters: {weight: 1.0}\n  - model: {ft1}\n    parameters: {weight: 0.7}\n"
    merge(write_config(tmp_path / "m.yaml", text, family), tmp_path / "ta", progress=False)
    a, b = state(tmp_path / "cv"), state(tmp_path / "ta")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6


def test_bf16_inputs_stay_bf16_and_out_dtype_wins(tmp_path):
    a = make_llama(tmp_path / "a", layers=2, seed=1, dtype=torch.bfloat16)
    b = make_llama(tmp_path / "b", layers=2, seed=2, dtype=torch.bfloat16)
    text = f"merge_method: slerp\nbase_model: {a}\nmodels: [{{model: {a}}}, {{model: {b}}}]\nparameters: {{t: 0.5}}\n"
    (tmp_path / "m.yaml").write_text(text)
    merge(tmp_path / "m.yaml", tmp_path / "bf16", progress=False)
    assert {t.dtype for t in state(tmp_path / "bf16").values()} == {torch.bfloat16}
    (tmp_path / "m32.yaml").write_text(text + "out_dtype: float32\n")
    merge(tmp_path / "m32.yaml", tmp_path / "f32", progress=False)
    assert {t.dtype for t in state(tmp_path / "f32").values()} == {torch.float32}
    assert json.loads((tmp_path / "f32" / "config.json").read_text())["dtype"] == "float32"


# --------------------------------------------------------------------------- layer maps


@pytest.fixture(scope="module")
def expanded(family, tmp_path_factory):
    root = tmp_path_factory.mktemp("expanded")
    return expand_with_tokenizer(family["base"], root / "x1"), expand_with_tokenizer(family["ft1"], root / "x2")


def test_models_sharing_a_layer_map_merge_and_keep_it(expanded, tmp_path):
    x1, x2 = expanded
    text = f"merge_method: linear\nmodels: [{{model: {x1}, parameters: {{weight: 1}}}}, {{model: {x2}, parameters: {{weight: 1}}}}]\n"
    (tmp_path / "m.yaml").write_text(text)
    merge(tmp_path / "m.yaml", tmp_path / "out", progress=False)
    lineage = json.loads((tmp_path / "out" / "llamak.json").read_text())
    assert lineage["layer_map"] == json.loads((x1 / "llamak.json").read_text())["layer_map"]
    assert lineage["stage"] == "merge"


def test_different_layer_maps_are_refused_unless_sliced(expanded, family, tmp_path):
    x1, _ = expanded
    ft1 = family["ft1"]
    (tmp_path / "m.yaml").write_text(f"merge_method: slerp\nbase_model: {x1}\nmodels: [{{model: {x1}}}, {{model: {ft1}}}]\nparameters: {{t: 0.5}}\n")
    with pytest.raises(LlamakError, match="different layer maps"):
        merge(tmp_path / "m.yaml", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    # explicit slices: pair x1's original layers 0-1 (map entries 0, 1) with ft1's layers 0-1
    sliced = f"""
merge_method: slerp
base_model: {x1}
slices:
  - sources: [{{model: {x1}, layer_range: [0, 2]}}, {{model: {ft1}, layer_range: [0, 2]}}]
  - sources: [{{model: {x1}, layer_range: [3, 5]}}, {{model: {ft1}, layer_range: [2, 4]}}]
parameters: {{t: 0.5}}
"""
    (tmp_path / "s.yaml").write_text(sliced)
    result = merge(tmp_path / "s.yaml", tmp_path / "sliced", progress=False)
    assert result.num_layers == 4
    lineage = json.loads((tmp_path / "sliced" / "llamak.json").read_text())
    assert lineage["layer_map"] is None  # layers 0,1,2,3 of the original base again: identity


# --------------------------------------------------------------------------- bad configs


BAD = {
    "unknown_method": ("merge_method: frobnicate\nmodels: [{model: {ft1}}]\n", "unknown method 'frobnicate'"),
    "mergekit_only": ("merge_method: della\nbase_model: {base}\nmodels: [{model: {ft1}}]\n", "mergekit method llamak does not implement"),
    "no_base": ("merge_method: task_arithmetic\nmodels: [{model: {ft1}, parameters: {weight: 1}}]\n", "needs 'base_model'"),
    "t_range": ("merge_method: slerp\nbase_model: {base}\nmodels: [{model: {base}}, {model: {ft1}}]\nparameters: {t: 1.5}\n", "within [0, 1]"),
    "typo": ("merge_method: ties\nbase_model: {base}\nmodels: [{model: {ft1}, parameters: {weight: 1, densty: 0.5}}]\n", "densty: not a parameter of ties"),
    "no_weight": ("merge_method: ties\nbase_model: {base}\nmodels: [{model: {ft1}}]\n", "no value for parameter 'weight'"),
    "shape": ("merge_method: linear\nmodels: [{model: {ft1}, parameters: {weight: 1}}, {model: {small}, parameters: {weight: 1}}]\n", "shapes differ"),
    "both": ("merge_method: linear\nmodels: [{model: {ft1}}]\nslices: [{sources: [{model: {ft1}, layer_range: [0, 2]}]}]\n", "exactly one of 'models' or 'slices'"),
    "missing": ("merge_method: linear\nmodels: [{model: /no/such/model, parameters: {weight: 1}}]\n", "no such directory"),
    "stock_two": ("merge_method: model_stock\nbase_model: {base}\nmodels: [{model: {ft1}}]\n", "at least 3"),
    "range": ("merge_method: passthrough\nslices: [{sources: [{model: {ft1}, layer_range: [2, 9]}]}]\n", "layer_range"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_configs_fail_in_one_line_with_exit_2(case, family, tmp_path_factory, tmp_path):
    small = tmp_path_factory.getbasetemp() / "small-vocab"
    if not small.exists():
        make_llama(small, layers=4, hidden=32, vocab=128)
    text, expected = BAD[case]
    config = write_config(tmp_path / "bad.yaml", text, {**family, "small": small})
    result = subprocess.run(
        [sys.executable, "-m", "llamak.cli", "merge", str(config), "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_config_rejects_unsupported_mergekit_keys():
    with pytest.raises(LlamakError, match="modules"):
        check_config({"merge_method": "linear", "modules": {"text": {}}})
    with pytest.raises(LlamakError, match="LoRA"):
        check_config({"merge_method": "linear", "models": [{"model": "a+b", "parameters": {"weight": 1}}]})


# --------------------------------------------------------------------------- recipe


def test_recipe_merge_stage_names_earlier_stages(llama3_pair, tmp_path):
    from llamak.recipe import run_recipe

    base, instruct = llama3_pair
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
name: m
base: {base}
instruct: {instruct}
stages:
  - expand: {{blocks: 2}}
  - chat_vector: {{ratio: 1.0}}
  - merge: {{method: slerp, models: [expand, chat_vector], t: 0.25}}
""")
    manifest = run_recipe(recipe, tmp_path / "runs", sample=False)
    run = tmp_path / "runs" / "m"
    assert manifest["stages"]["merge"]["metrics"]["layers"] == 6
    lineage = json.loads((run / "merge" / "llamak.json").read_text())
    assert len(lineage["layer_map"]) == 6 and set(lineage["inputs"]) == {"expand", "chat_vector"}
    merged, start = state(run / "merge"), state(run / "expand")
    name = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(merged[name], start[name])
    before = (run / "merge" / "model.safetensors").stat().st_mtime_ns
    run_recipe(recipe, tmp_path / "runs", sample=False)  # nothing changed: skipped
    assert (run / "merge" / "model.safetensors").stat().st_mtime_ns == before


def test_recipe_rejects_a_merge_of_a_later_stage(tmp_path, tiny_llama):
    from llamak.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: m\nbase: {tiny_llama}\nstages:\n  - merge: {{method: slerp, models: [base, expand]}}\n  - expand: {{blocks: 2}}\n")
    with pytest.raises(LlamakError, match="has not run yet"):
        load_recipe(recipe)
    recipe.write_text(f"name: m\nbase: {tiny_llama}\nstages:\n  - merge: {{method: slerp, models: [base, base], t: 2}}\n")
    with pytest.raises(LlamakError, match=r"stage 1 \(merge\): parameters.t: t must be within"):
        load_recipe(recipe)

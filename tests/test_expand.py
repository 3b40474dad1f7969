"""LLaMA-Pro expansion: function-preserving, layer maps recorded and composed, clear errors."""

import json

import pytest
import torch
from helpers import load, logits, random_ids
from helpers import state as all_tensors

from llamak.errors import LlamakError
from llamak.lineage import read_lineage
from llamak.surgery.expand import default_insert_after, expand, expanded_layer_map


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_sharded"])
def test_expansion_preserves_logits(request, tmp_path, fixture):
    """Inserted blocks have zero o_proj/down_proj, so every residual write is 0: same logits."""
    src = request.getfixturevalue(fixture)
    out = tmp_path / "expanded"
    result = expand(src, out, blocks=2, max_shard_bytes=60_000, progress=False)
    assert result.after == [1, 3] and result.num_layers == 6
    ids = random_ids()
    assert torch.allclose(logits(load(src), ids), logits(load(out), ids), atol=1e-5)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 6
    assert (out / "model.safetensors.index.json").is_file()  # small shards → sharded output


def test_inserted_blocks_copy_source_except_zeroed_projections(tiny_llama, tmp_path):
    out = tmp_path / "expanded"
    expand(tiny_llama, out, after=[0, 2], progress=False)
    before, after = all_tensors(tiny_llama), all_tensors(out)
    assert len(after) == len(before) + 2 * 9  # 9 tensors per Llama block
    # output layer 1 is the copy of layer 0; output layer 4 the copy of layer 2
    for out_layer, src_layer in [(1, 0), (4, 2)]:
        for key, value in before.items():
            prefix = f"model.layers.{src_layer}."
            if not key.startswith(prefix):
                continue
            new = after[key.replace(prefix, f"model.layers.{out_layer}.")]
            if "o_proj" in key or "down_proj" in key:
                assert torch.count_nonzero(new) == 0
            else:
                assert torch.equal(new, value)
    # original layers move without change: old 1 → new 2, old 3 → new 5
    assert torch.equal(after["model.layers.2.mlp.down_proj.weight"], before["model.layers.1.mlp.down_proj.weight"])
    assert torch.equal(after["model.layers.5.self_attn.q_proj.weight"], before["model.layers.3.self_attn.q_proj.weight"])
    assert torch.equal(after["lm_head.weight"], before["lm_head.weight"])


def test_layer_map_and_lineage_are_written(tiny_llama, tmp_path):
    out = tmp_path / "expanded"
    expand(tiny_llama, out, blocks=2, progress=False)
    lineage = read_lineage(out)
    assert lineage["stage"] == "expand"
    assert lineage["args"] == {"blocks": 2, "after": [1, 3]}
    assert lineage["layer_map"] == [
        {"origin": "base", "source": 0},
        {"origin": "base", "source": 1},
        {"origin": "inserted", "copy_of": 1},
        {"origin": "base", "source": 2},
        {"origin": "base", "source": 3},
        {"origin": "inserted", "copy_of": 3},
    ]
    assert lineage["inputs"]["model"]["hash"].startswith("sha256:")
    assert "torch" in lineage["versions"] and "transformers" in lineage["versions"]
    assert (out / "generation_config.json").is_file()


def test_expanding_an_expanded_model_composes_maps_and_preserves_logits(tiny_llama, tmp_path):
    first, second = tmp_path / "once", tmp_path / "twice"
    expand(tiny_llama, first, blocks=2, progress=False)
    expand(first, second, after=[0, 2], progress=False)  # output layer 2 of `first` is an inserted copy of 1
    layer_map = read_lineage(second)["layer_map"]
    assert [e["origin"] for e in layer_map] == ["base", "inserted", "base", "inserted", "inserted", "base", "base", "inserted"]
    assert layer_map[1] == {"origin": "inserted", "copy_of": 0}
    assert layer_map[4] == {"origin": "inserted", "copy_of": 1}  # copy of an inserted copy of base layer 1
    ids = random_ids()
    assert torch.allclose(logits(load(tiny_llama), ids), logits(load(second), ids), atol=1e-5)


def test_per_layer_config_lists_follow_the_new_order(tmp_path):
    from conftest import make_llama

    src = make_llama(tmp_path / "src")
    config = json.loads((src / "config.json").read_text())
    config["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    (src / "config.json").write_text(json.dumps(config))
    expand(src, tmp_path / "out", after=[1], progress=False)
    new = json.loads((tmp_path / "out" / "config.json").read_text())
    assert new["layer_types"] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]


def test_default_placement_matches_llama_pro():
    assert default_insert_after(32, 8) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert default_insert_after(80, 16)[:3] == [4, 9, 14]
    with pytest.raises(LlamakError, match="valid values: 1, 2, 4, 8, 16, 32"):
        default_insert_after(32, 5)


def test_layer_map_composition_is_pure():
    base_map = [{"origin": "base", "source": i} for i in range(3)]
    assert expanded_layer_map(base_map, [2])[-1] == {"origin": "inserted", "copy_of": 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"blocks": 3}, "must divide num_hidden_layers"),
        ({"after": [4]}, "layer indices must be in 0..3"),
        ({"after": [1, 1]}, "twice"),
        ({"blocks": 1, "after": [0, 1]}, "disagrees"),
        ({}, "give --blocks"),
    ],
)
def test_bad_arguments_fail_without_output(tiny_llama, tmp_path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(LlamakError, match=message):
        expand(tiny_llama, out, progress=False, **kwargs)
    assert not out.exists() and not (tmp_path / "out.partial").exists()

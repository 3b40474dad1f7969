"""Chat Vector: T + r·(I − B), checked tensor by tensor against an independent computation."""

import pytest
import torch
from conftest import make_llama
from helpers import load, random_ids, state

from llamak.errors import ArchitectureMismatch
from llamak.lineage import read_lineage
from llamak.surgery.chat_vector import chat_vector
from llamak.surgery.expand import expand


@pytest.fixture(scope="module")
def trio(tmp_path_factory):
    """base, instruct (= base architecture, other weights) and a 'CPT' target, all different."""
    root = tmp_path_factory.mktemp("trio")
    return (
        make_llama(root / "base", seed=1),
        make_llama(root / "instruct", seed=2),
        make_llama(root / "target", seed=3, shard_size="30KB"),
    )


def test_unexpanded_target_gets_the_vector_on_every_tensor(trio, tmp_path):
    base, instruct, target = trio
    out = tmp_path / "out"
    result = chat_vector(base, instruct, target, out, ratio=0.5, progress=False)
    B, I, T, O = state(base), state(instruct), state(target), state(out)
    assert set(O) == set(T) and result.added == len(T) and result.copied == 0
    for name in T:
        expected = T[name] + 0.5 * (I[name] - B[name])
        assert torch.allclose(O[name], expected, atol=1e-6), name


def test_expanded_target_follows_the_layer_map(trio, tmp_path):
    base, instruct, target = trio
    expanded = tmp_path / "expanded"
    expand(target, expanded, blocks=2, progress=False)  # layers: 0 1 +1 2 3 +3
    out = tmp_path / "out"
    chat_vector(base, instruct, expanded, out, ratio=1.0, progress=False)
    B, I, T, O = state(base), state(instruct), state(expanded), state(out)
    source_of = {0: 0, 1: 1, 3: 2, 4: 3}  # output layer → base layer, for original layers
    for name, value in T.items():
        if name.startswith("model.layers."):
            k = int(name.split(".")[2])
            rest = name.split(".", 3)[3]
            if k in source_of:
                src = f"model.layers.{source_of[k]}.{rest}"
                assert torch.allclose(O[name], value + I[src] - B[src], atol=1e-6), name
            else:  # inserted blocks unchanged by default
                assert torch.equal(O[name], value), name
        else:
            assert torch.allclose(O[name], value + I[name] - B[name], atol=1e-6), name
    assert read_lineage(out)["layer_map"] == read_lineage(expanded)["layer_map"]


def test_inserted_copy_mode_adds_source_vector_except_zero_init(trio, tmp_path):
    base, instruct, target = trio
    expanded = tmp_path / "expanded"
    expand(target, expanded, blocks=2, progress=False)
    out = tmp_path / "out"
    chat_vector(base, instruct, expanded, out, inserted="copy", progress=False)
    B, I, T, O = state(base), state(instruct), state(expanded), state(out)
    for k, src in [(2, 1), (5, 3)]:
        for rest in ["self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"]:
            name, s = f"model.layers.{k}.{rest}", f"model.layers.{src}.{rest}"
            assert torch.allclose(O[name], T[name] + I[s] - B[s], atol=1e-6)
        for rest in ["self_attn.o_proj.weight", "mlp.down_proj.weight"]:
            assert torch.count_nonzero(O[f"model.layers.{k}.{rest}"]) == 0


def test_different_vocabulary_keeps_target_embeddings_with_a_warning(trio, tmp_path, caplog):
    base, instruct, _ = trio
    target = make_llama(tmp_path / "bigvocab", seed=4, vocab=300)
    out = tmp_path / "out"
    result = chat_vector(base, instruct, target, out, progress=False)
    T, O = state(target), state(out)
    assert torch.equal(O["model.embed_tokens.weight"], T["model.embed_tokens.weight"])
    assert torch.equal(O["lm_head.weight"], T["lm_head.weight"])
    assert result.notes and "vocabulary differs" in caplog.text
    assert not torch.equal(O["model.norm.weight"], T["model.norm.weight"])


def test_skip_embeddings_flag(trio, tmp_path):
    base, instruct, target = trio
    out = tmp_path / "out"
    chat_vector(base, instruct, target, out, skip_embeddings=True, progress=False)
    T, O = state(target), state(out)
    assert torch.equal(O["model.embed_tokens.weight"], T["model.embed_tokens.weight"])
    assert torch.equal(O["lm_head.weight"], T["lm_head.weight"])


def test_tied_embeddings(tmp_path):
    base = make_llama(tmp_path / "b", seed=1, tied=True)
    instruct = make_llama(tmp_path / "i", seed=2, tied=True)
    target = make_llama(tmp_path / "t", seed=3, tied=True)
    out = tmp_path / "out"
    chat_vector(base, instruct, target, out, progress=False)
    B, I, T, O = state(base), state(instruct), state(target), state(out)
    assert "lm_head.weight" not in O
    e = "model.embed_tokens.weight"
    assert torch.allclose(O[e], T[e] + I[e] - B[e], atol=1e-6)


def test_untied_target_with_tied_base_uses_base_embeddings_as_lm_head(tmp_path):
    base = make_llama(tmp_path / "b", seed=1, tied=True)
    instruct = make_llama(tmp_path / "i", seed=2, tied=True)
    target = make_llama(tmp_path / "t", seed=3)
    out = tmp_path / "out"
    chat_vector(base, instruct, target, out, progress=False)
    B, I, T, O = state(base), state(instruct), state(target), state(out)
    e = "model.embed_tokens.weight"
    assert torch.allclose(O["lm_head.weight"], T["lm_head.weight"] + I[e] - B[e], atol=1e-6)


@pytest.mark.parametrize("expanded", [False, True])
def test_output_loads_and_generates(trio, tmp_path, expanded):
    base, instruct, target = trio
    if expanded:
        expand(target, tmp_path / "expanded", blocks=2, progress=False)
        target = tmp_path / "expanded"
    out = tmp_path / "out"
    chat_vector(base, instruct, target, out, progress=False)
    model = load(out)
    assert model.config.num_hidden_layers == (6 if expanded else 4)
    generated = model.generate(random_ids(batch=1, length=5), max_new_tokens=4, do_sample=False)
    assert generated.shape == (1, 9)


def test_expanded_base_and_instruct_never_touch_inserted_blocks(trio, tmp_path):
    """B, I and T all expanded with one map: original layers get I − B, inserted blocks stay as T's."""
    base, instruct, target = trio
    for name, model in [("b", base), ("i", instruct), ("t", target)]:
        expand(model, tmp_path / name, blocks=2, progress=False)
    out = tmp_path / "out"
    chat_vector(tmp_path / "b", tmp_path / "i", tmp_path / "t", out, progress=False)
    B, I, T, O = state(tmp_path / "b"), state(tmp_path / "i"), state(tmp_path / "t"), state(out)
    for name, value in T.items():
        if name.startswith(("model.layers.2.", "model.layers.5.")):
            assert torch.equal(O[name], value), name
        else:
            assert torch.allclose(O[name], value + I[name] - B[name], atol=1e-6), name


def test_failure_mid_stream_leaves_no_output(trio, tmp_path):
    """A shard truncated after its header was read: the error surfaces and nothing is left behind."""
    import shutil

    base, instruct, target = trio
    broken = tmp_path / "broken"
    shutil.copytree(target, broken)
    shard = sorted(broken.glob("*.safetensors"))[-1]
    data = shard.read_bytes()
    out = tmp_path / "out"
    from llamak.surgery.tensors import CheckpointReader

    with CheckpointReader(broken) as reader:  # a valid header first, then the bytes go missing
        shard.write_bytes(data[: len(data) - 64])
        from llamak.errors import CheckpointError
        from llamak.surgery import chat_vector as cv

        with pytest.raises(CheckpointError, match="truncated"):
            t = cv.ModelDir.open(broken, "--target")
            b, i = cv.ModelDir.open(base), cv.ModelDir.open(instruct)
            result = cv.ChatVectorResult(out)
            readers = {"target": reader, "base": b.reader(), "instruct": i.reader()}
            plan = cv.plan_chat_vector(t, b, readers, 1.0, "skip", False, result)
            with cv.atomic_output(out) as tmp:
                cv.execute(plan, readers, tmp, progress=False)
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("field, kwargs", [("hidden_size", {"hidden": 64}), ("num_hidden_layers", {"layers": 2})])
def test_architecture_mismatch_between_base_and_instruct(trio, tmp_path, field, kwargs):
    base, _, target = trio
    other = make_llama(tmp_path / "other", **kwargs)
    with pytest.raises(ArchitectureMismatch, match=field):
        chat_vector(base, other, target, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_expanded_target_with_layers_beyond_base_is_refused(trio, tmp_path):
    base, instruct, _ = trio
    big = make_llama(tmp_path / "big", layers=6)
    expanded = tmp_path / "expanded"
    expand(big, expanded, blocks=2, progress=False)
    small_base = make_llama(tmp_path / "sb", layers=4)
    with pytest.raises(ArchitectureMismatch, match="maps to base layer"):
        chat_vector(small_base, make_llama(tmp_path / "si", layers=4, seed=9), expanded, tmp_path / "out", progress=False)


def test_chunked_arithmetic_equals_direct_formula(monkeypatch):
    from llamak.surgery import chat_vector as cv

    monkeypatch.setattr(cv, "CHUNK_ELEMENTS", 7)  # force many uneven chunks
    g = torch.Generator().manual_seed(0)
    t, b, i = (torch.randn(5, 9, generator=g).to(torch.bfloat16) for _ in range(3))
    got = cv.add_chat_vector(t, b, i, ratio=0.3)
    expected = (t.float() + 0.3 * (i.float() - b.float())).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)

"""Streaming safetensors IO: our files are read by the safetensors library and vice versa."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from llamak.errors import CheckpointError
from llamak.surgery.tensors import CheckpointReader, ShardedWriter, TensorSpec, shard_layout, weight_files


def random_tensors():
    g = torch.Generator().manual_seed(0)
    return {
        "a.weight": torch.randn(7, 5, generator=g),
        "b.weight": torch.randn(33, generator=g).to(torch.bfloat16),
        "c.bias": torch.randn(3, 4, 2, generator=g).to(torch.float16),
        "d.ids": torch.arange(10, dtype=torch.int64),
        "e.scalar": torch.tensor(3.5),
    }


def test_written_shards_load_with_safetensors_and_index_is_complete(tmp_path):
    tensors = random_tensors()
    specs = [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()]
    writer = ShardedWriter(tmp_path, specs, max_shard_bytes=100)
    for name in reversed(list(tensors)):  # any order works: offsets are planned up front
        writer.write(name, tensors[name])
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in tensors.values())
    assert len(set(index["weight_map"].values())) > 1
    for name, shard in index["weight_map"].items():
        with safe_open(tmp_path / shard, framework="pt") as f:
            assert f.metadata() == {"format": "pt"}
            assert torch.equal(f.get_tensor(name), tensors[name])


def test_single_shard_is_named_model_safetensors_without_index(tmp_path):
    tensors = random_tensors()
    writer = ShardedWriter(tmp_path, [TensorSpec(k, v.dtype, tuple(v.shape)) for k, v in tensors.items()])
    for k, v in tensors.items():
        writer.write(k, v)
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    loaded = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_reader_matches_safetensors_library(tmp_path):
    tensors = random_tensors()
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with CheckpointReader(tmp_path) as reader:
        assert set(reader.names()) == set(tensors)
        for k, v in tensors.items():
            assert reader.read(k).dtype == v.dtype
            assert torch.equal(reader.read(k), v)


def test_copy_bytes_and_zero_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    tensors = random_tensors()
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    out.mkdir()
    with CheckpointReader(src) as reader:
        specs = [reader.spec("a.weight"), TensorSpec("z", torch.float32, (4, 4)), reader.spec("b.weight")]
        writer = ShardedWriter(out, specs)
        writer.copy_bytes("a.weight", reader, "a.weight")
        writer.copy_bytes("b.weight", reader, "b.weight")
        writer.mark_zero("z")
        writer.close()
    loaded = load_file(out / "model.safetensors")
    assert torch.equal(loaded["a.weight"], tensors["a.weight"])
    assert torch.equal(loaded["b.weight"], tensors["b.weight"])
    assert torch.equal(loaded["z"], torch.zeros(4, 4))


def test_writer_refuses_wrong_shape_and_unwritten_tensors(tmp_path):
    writer = ShardedWriter(tmp_path, [TensorSpec("x", torch.float32, (2,)), TensorSpec("y", torch.float32, (2,))])
    with pytest.raises(ValueError, match="planned"):
        writer.write("x", torch.zeros(3))
    writer.write("x", torch.zeros(2))
    with pytest.raises(RuntimeError, match="never written"):
        writer.close()


def test_shard_layout_keeps_order_and_gives_oversized_tensor_its_own_shard():
    specs = [TensorSpec(str(i), torch.float32, (n,)) for i, n in enumerate([10, 10, 100, 5])]
    shards = shard_layout(specs, max_shard_bytes=80)
    assert [[s.name for s in shard] for shard in shards] == [["0", "1"], ["2"], ["3"]]


@pytest.mark.parametrize(
    "header",
    [
        b'[1, 2]',
        b'{"w": {"shape": [2], "data_offsets": [0, 8]}}',
        b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}',
        b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 800]}}',
    ],
    ids=["not-an-object", "no-dtype", "offsets-vs-shape", "past-end-of-file"],
)
def test_malformed_headers_are_checkpoint_errors(tmp_path, header):
    import struct

    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        CheckpointReader(tmp_path)


def test_pickled_checkpoint_is_refused_with_a_hint(tmp_path):
    torch.save({"w": torch.zeros(2)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        weight_files(tmp_path)

"""Streaming safetensors IO: read one tensor at a time, write shards whose layout is planned up front.

Why not `safetensors.safe_open` / `save_file`? Reading through `safe_open` memory-maps whole shards,
so every tensor touched stays resident (and counted in RSS) until the shard is closed; `save_file`
needs every tensor of a shard in memory at once. Both make peak memory grow with the shard, not with
the largest tensor. The format itself is trivial (8-byte little-endian header length, a JSON header,
raw little-endian bytes), so this module reads tensors with `pread` straight into a fresh tensor, and
writes output shards whose headers are computed from the plan before any data exists: each tensor is
then `pwrite`n to its final offset, unchanged byte ranges are copied inside the kernel with
`copy_file_range` (as `cp` does), and all-zero tensors are left as holes of a pre-sized file.
Files written here are read back by the `safetensors` library in the tests.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from llamak.errors import CheckpointError

SAFETENSORS_INDEX = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
DEFAULT_SHARD_BYTES = 5 * 10**9  # the Hugging Face default "5GB"

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "consolidated.00.pth")


@dataclass(frozen=True)
class TensorSpec:
    """What an output tensor will be: enough to lay out a shard before any data exists."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class StoredTensor:
    """Where a tensor's bytes live inside a safetensors file."""

    spec: TensorSpec
    file: Path
    offset: int  # absolute byte offset of the data in `file`


def _read_header(f) -> tuple[bytes, dict]:
    head = f.read(8)
    (n,) = struct.unpack("<Q", head)
    if n > 100 * 2**20:
        raise ValueError("header length is implausible")
    raw = f.read(n)
    return head + raw, json.loads(raw)


def parse_header(path: Path) -> tuple[dict[str, TensorSpec], dict[str, int], int]:
    """Read and check one safetensors header: (specs, data offsets relative to the buffer, buffer start)."""
    try:
        with open(path, "rb") as f:
            raw, header = _read_header(f)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        buffer_size = path.stat().st_size - len(raw)
        specs, offsets = {}, {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
                raise ValueError(f"tensor {name}: missing or unsupported dtype {entry.get('dtype') if isinstance(entry, dict) else entry!r}")
            spec = TensorSpec(name, DTYPES[entry["dtype"]], tuple(entry["shape"]))
            start, end = entry["data_offsets"]
            if end - start != spec.nbytes or not 0 <= start <= end <= buffer_size:
                raise ValueError(f"tensor {name}: data_offsets {start}..{end} do not fit its shape or the file size")
            specs[name], offsets[name] = spec, start
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    return specs, offsets, len(raw)


def header_bytes(path: Path) -> bytes:
    """The raw header (length + JSON) of a safetensors file, for content hashing."""
    with open(path, "rb") as f:
        return _read_header(f)[0]


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint, from its index if sharded. Refuses pickled weights."""
    index = model_dir / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: malformed index, expected a 'weight_map' object ({e})") from None
        files = [model_dir / f for f in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index}: lists shards that are missing: {', '.join(missing)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        return files
    pickled = [p for p in PICKLED_WEIGHTS if (model_dir / p).exists()] + [p.name for p in model_dir.glob("*.bin")]
    if pickled:
        raise CheckpointError(
            f"{model_dir}: has pickled weights ({pickled[0]}) but no safetensors; llamak does not unpickle "
            "checkpoints (arbitrary code execution). Convert once with `llamak convert "
            f"{model_dir} --out DIR --allow-pickle` if you trust the file."
        )
    raise CheckpointError(f"{model_dir}: no *.safetensors weights found")


class CheckpointReader:
    """Random access to the tensors of a (possibly sharded) safetensors checkpoint, one at a time."""

    def __init__(self, model_dir: str | Path):
        self.model_dir = Path(model_dir)
        self.files = weight_files(self.model_dir)
        self.tensors: dict[str, StoredTensor] = {}
        for path in self.files:
            specs, offsets, data_start = parse_header(path)
            for name, spec in specs.items():
                self.tensors[name] = StoredTensor(spec, path, data_start + offsets[name])
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()  # several executor threads may open shards at once

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def names(self) -> list[str]:
        return list(self.tensors)

    def spec(self, name: str) -> TensorSpec:
        return self.tensors[name].spec

    def fd(self, path: Path) -> int:
        with self._lock:
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def read(self, name: str) -> torch.Tensor:
        """Read one tensor into fresh memory (no memory map stays behind)."""
        stored = self.tensors[name]
        out = torch.empty(stored.spec.shape, dtype=stored.spec.dtype)
        buf = _bytes_view(out)
        fd, done = self.fd(stored.file), 0
        while done < len(buf):  # pread may return less than asked (e.g. above 2 GiB)
            n = os.preadv(fd, [buf[done:]], stored.offset + done)
            if n <= 0:
                raise CheckpointError(f"{stored.file}: truncated while reading tensor {name}")
            done += n
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _bytes_view(t: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous tensor's storage (works for bf16, which numpy lacks)."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")


def shard_layout(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Split tensors, in order, into shards of at most `max_shard_bytes` (a larger tensor gets its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        if shards[-1] and size + spec.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += spec.nbytes
    return shards if shards[0] else []


class ShardedWriter:
    """Writes a checkpoint whose tensors are all declared up front.

    Headers are written at construction and every file is pre-sized, so tensors can be written in any
    order (and from several threads). `close()` checks that every tensor was written or declared zero,
    then writes `model.safetensors.index.json` when there is more than one shard.
    """

    def __init__(self, out_dir: str | Path, specs: list[TensorSpec], max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.out_dir = Path(out_dir)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError("duplicate tensor names in output plan")
        shards = shard_layout(specs, max_shard_bytes)
        self.slots: dict[str, tuple[int, int, TensorSpec]] = {}  # name -> (fd, offset, spec)
        self.weight_map: dict[str, str] = {}
        self._fds: list[int] = []
        self._pending = set(names)
        for i, shard in enumerate(shards):
            fname = SINGLE_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            header: dict = {"__metadata__": {"format": "pt"}}
            offset = 0
            for spec in shard:
                header[spec.name] = {
                    "dtype": DTYPE_CODES[spec.dtype],
                    "shape": list(spec.shape),
                    "data_offsets": [offset, offset + spec.nbytes],
                }
                offset += spec.nbytes
            raw = json.dumps(header, separators=(",", ":")).encode()
            raw += b" " * (-len(raw) % 8)  # keep the data buffer 8-byte aligned, as safetensors does
            fd = os.open(self.out_dir / fname, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds.append(fd)
            os.pwrite(fd, struct.pack("<Q", len(raw)) + raw, 0)
            data_start = 8 + len(raw)
            os.ftruncate(fd, data_start + offset)  # unwritten bytes read as zeros (a sparse hole)
            for spec in shard:
                start = header[spec.name]["data_offsets"][0]
                self.slots[spec.name] = (fd, data_start + start, spec)
                self.weight_map[spec.name] = fname
        self.total_size = sum(s.nbytes for s in specs)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        fd, offset, spec = self.slots[name]
        if tensor.dtype != spec.dtype or tuple(tensor.shape) != spec.shape:
            raise ValueError(
                f"tensor {name}: planned {spec.dtype} {list(spec.shape)}, got {tensor.dtype} {list(tensor.shape)}"
            )
        buf = _bytes_view(tensor.contiguous())
        done = 0
        while done < len(buf):
            done += os.pwritev(fd, [buf[done:]], offset + done)
        self._pending.discard(name)

    def copy_bytes(self, name: str, reader: CheckpointReader, source: str) -> None:
        """Copy a stored tensor byte for byte, inside the kernel (no trip through Python memory)."""
        fd, offset, spec = self.slots[name]
        stored = reader.tensors[source]
        if stored.spec.dtype != spec.dtype or stored.spec.shape != spec.shape:
            raise ValueError(f"tensor {name}: cannot byte-copy {source}, its dtype/shape differ from the plan")
        src_fd, done, n = reader.fd(stored.file), 0, spec.nbytes
        while done < n and hasattr(os, "copy_file_range"):  # Linux only
            try:
                step = os.copy_file_range(src_fd, fd, n - done, stored.offset + done, offset + done)
            except OSError:  # e.g. across file systems on old kernels
                break
            if step <= 0:  # some file systems answer 0 for valid ranges: copy the rest by hand
                break
            done += step
        if done < n:
            self.write(name, reader.read(source))  # buffered fallback (rewrites the whole tensor)
        self._pending.discard(name)

    def mark_zero(self, name: str) -> None:
        """Declare a tensor all zeros: its bytes stay a hole of the pre-sized file."""
        self._pending.discard(name)

    def close(self, check: bool = True) -> None:
        """Close the files; with `check`, fail on unwritten tensors, else write the index."""
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        if not check:
            return
        if self._pending:
            raise RuntimeError(f"output tensors never written: {sorted(self._pending)[:5]}")
        if len(set(self.weight_map.values())) > 1:
            index = {"metadata": {"total_size": self.total_size}, "weight_map": self.weight_map}
            (self.out_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")

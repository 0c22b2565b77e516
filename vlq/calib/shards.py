"""Safetensors shards read and written one tensor at a time, with plain file I/O.

Why not `safe_open`: it memory-maps the whole shard, and every page it touches stays in the
process's resident set until the file is closed, so reading a model layer by layer from a few
big shards would grow RSS to the shard size. Here each tensor is `readinto` a buffer of its
own size, and a shard is written tensor by tensor after its header: host memory holds one
tensor (or one layer), never a shard.

Format (https://github.com/huggingface/safetensors): 8-byte little-endian header length, a
JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}` padded
with spaces to 8 bytes, then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from vlq.errors import InputError

DTYPES = {
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
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: its shard, dtype name, shape and byte range after the header."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int
    data_start: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def read_header(path: Path) -> tuple[int, dict]:
    """(offset of the data section, header dict) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InputError(f"{path} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path} is not a safetensors file (bad header)") from None
    return 8 + length, header


class ShardedCheckpoint:
    """The tensors of a checkpoint folder's safetensors shards, by checkpoint key."""

    def __init__(self, entries: dict[str, TensorEntry]):
        self.entries = entries

    @classmethod
    def open(cls, folder: Path) -> ShardedCheckpoint | None:
        """The folder's safetensors (index or single file), or None when it has none."""
        index = folder / INDEX_NAME
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise InputError(f"{index} is not a valid safetensors index") from None
        elif (folder / SINGLE_NAME).is_file():
            files = [SINGLE_NAME]
        else:
            return None
        entries = {}
        for name in files:
            path = folder / name
            if not path.is_file():
                raise InputError(f"{index} names {name}, which is missing")
            data_start, header = read_header(path)
            for key, meta in header.items():
                if key == "__metadata__":
                    continue
                begin, end = meta["data_offsets"]
                entries[key] = TensorEntry(path, meta["dtype"], tuple(meta["shape"]), begin, end, data_start)
        return cls(entries)

    @property
    def keys(self) -> list[str]:
        return list(self.entries)

    def read(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, read into its own buffer (cast to `dtype` when given)."""
        entry = self.entries[key]
        buffer = bytearray(entry.nbytes)
        with open(entry.file, "rb") as f:
            f.seek(entry.data_start + entry.begin)
            if f.readinto(buffer) != entry.nbytes:
                raise InputError(f"{entry.file} is truncated at tensor {key}")
        torch_dtype = DTYPES[entry.dtype]
        if entry.nbytes == 0:
            tensor = torch.empty(entry.shape, dtype=torch_dtype)
        else:
            tensor = torch.frombuffer(buffer, dtype=torch_dtype).reshape(entry.shape)
            if sys.byteorder != "little":
                raise InputError("safetensors are little-endian; this machine is not")
        return tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)

    def read_many(self, keys: Iterable[str], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        return {key: self.read(key, dtype) for key in keys}


def _header_bytes(specs: list[tuple[str, str, tuple[int, ...], int]]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, nbytes in specs:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write_shard(
    path: Path,
    specs: list[tuple[str, torch.dtype, tuple[int, ...]]],
    produce: Callable[[str], torch.Tensor],
) -> int:
    """Write a shard tensor by tensor: `specs` (name, dtype, shape) fix the header, `produce(name)`
    returns each tensor when its turn comes. Written to a temp name and renamed: atomic. Returns bytes."""
    sized = [(n, DTYPE_NAMES[d], s, _numel(s) * torch.empty((), dtype=d).element_size()) for n, d, s in specs]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(_header_bytes(sized))
        for (name, dtype, shape), (_, _, _, nbytes) in zip(specs, sized):
            tensor = produce(name)
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise ValueError(
                    f"{name}: expected {dtype} {tuple(shape)}, got {tensor.dtype} {tuple(tensor.shape)}"
                )
            data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            if data.numel() != nbytes:
                raise ValueError(f"{name}: {data.numel()} bytes, expected {nbytes}")
            f.write(memoryview(data.numpy()))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return sum(s[3] for s in sized)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> int:
    """Write tensors already in memory as one shard (atomic)."""
    specs = [(name, t.dtype, tuple(t.shape)) for name, t in tensors.items()]
    return write_shard(path, specs, tensors.__getitem__)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n

"""Writing safetensors files tensor by tensor, with shards and an index.

The ``safetensors`` library's ``save_file`` wants every tensor in memory at once and refuses tensors that
share storage (q, k and v are views of one fused tensor). This writer computes the header from names,
shapes and dtypes alone, then writes each tensor's bytes as an iterator produces it: one tensor is in
memory at a time. The files it writes
are read by ``safetensors.safe_open`` and ``from_pretrained`` as any others.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}

Progress = Callable[[int], None]  # called with the number of bytes just written


def parse_size(size: int | str) -> int:
    """``"5GB"`` → 5_000_000_000, ``"500MiB"`` → 524_288_000; an int is taken as bytes."""
    if isinstance(size, int):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", size, flags=re.IGNORECASE)
        if not match:
            raise ValueError(f"cannot read size {size!r}; write it like 5GB, 500MB or 2GiB")
        value = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").upper()])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


TensorSpec = tuple[str, tuple[int, ...], torch.dtype]  # (name, shape, dtype) of a tensor to write


def tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def spec_nbytes(spec: TensorSpec) -> int:
    _, shape, dtype = spec
    return math.prod(shape) * dtype.itemsize


def plan_shards(specs: list[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Group tensors, in the given order, into shards of at most ``max_shard_bytes`` (a larger tensor gets
    its own)."""
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for spec in specs:
        nbytes = spec_nbytes(spec)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    return shards


def write_safetensors(
    path: Path,
    specs: list[TensorSpec],
    tensors: Iterator[tuple[str, torch.Tensor]],
    *,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> None:
    """Write one safetensors file: the header from ``specs``, then each tensor as ``tensors`` yields it.

    ``tensors`` must yield exactly the tensors of ``specs``, in order; each is released once written.
    """
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for spec in specs:
        name, shape, dtype = spec
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {dtype} cannot be stored in safetensors")
        nbytes = spec_nbytes(spec)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # align the data section to 8 bytes, as safetensors does
    with open(path, "wb") as stream:
        stream.write(len(encoded).to_bytes(8, "little"))
        stream.write(encoded)
        for name, shape, dtype in specs:
            got, tensor = next(tensors)
            if got != name or tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise RuntimeError(
                    f"expected {name} {list(shape)} {dtype}, got {got} {list(tensor.shape)} {tensor.dtype}"
                )
            stream.write(raw_bytes(tensor))
            if progress is not None:
                progress(tensor_nbytes(tensor))
            del tensor


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A tensor's bytes, C-contiguous, without a copy when it already is (e.g. a view of a mapped file)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def write_weights(
    folder: Path,
    specs: list[TensorSpec],
    tensors: Iterator[tuple[str, torch.Tensor]],
    *,
    max_shard_bytes: int,
    progress: Progress | None = None,
) -> list[str]:
    """Stream ``tensors`` into ``folder`` as one file, or as shards with an index; return the file names."""
    shards = plan_shards(specs, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors(folder / SINGLE_FILE, shards[0], tensors, progress=progress)
        return [SINGLE_FILE]
    files, weight_map = [], {}
    for number, shard in enumerate(shards, start=1):
        file_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / file_name, shard, tensors, progress=progress)
        weight_map.update({name: file_name for name, _, _ in shard})
        files.append(file_name)
    index = {
        "metadata": {"total_size": sum(spec_nbytes(spec) for spec in specs)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_FILE]

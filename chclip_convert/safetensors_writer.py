"""Writing safetensors files tensor by tensor, with shards and an index.

The ``safetensors`` library's ``save_file`` wants every tensor in memory at once and refuses tensors that
share storage (q, k and v are views of one fused tensor). This writer computes the header from shapes
and dtypes, then streams each tensor's bytes: one tensor is materialised at a time. The files it writes
are read by ``safetensors.safe_open`` and ``from_pretrained`` as any others.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
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


def tensor_nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def plan_shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[list[str]]:
    """Group names (sorted) into shards of at most ``max_shard_bytes`` (a larger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    size = 0
    for name in sorted(tensors):
        nbytes = tensor_nbytes(tensors[name])
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    return shards


def write_safetensors(
    path: Path,
    tensors: dict[str, torch.Tensor],
    names: list[str],
    *,
    metadata: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> None:
    """Write ``names`` from ``tensors`` to ``path`` in safetensors format, one tensor at a time."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name in names:
        tensor = tensors[name]
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {tensor.dtype} cannot be stored in safetensors")
        nbytes = tensor_nbytes(tensor)
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # align the data section to 8 bytes, as safetensors does
    with open(path, "wb") as stream:
        stream.write(len(encoded).to_bytes(8, "little"))
        stream.write(encoded)
        for name in names:
            stream.write(_raw_bytes(tensors[name]))
            if progress is not None:
                progress(tensor_nbytes(tensors[name]))
        stream.flush()


def _raw_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def write_weights(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    *,
    max_shard_bytes: int,
    progress: Progress | None = None,
) -> list[str]:
    """Write ``tensors`` into ``folder`` as one file or as shards with an index; return the file names."""
    shards = plan_shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors(folder / SINGLE_FILE, tensors, shards[0], progress=progress)
        return [SINGLE_FILE]
    files, weight_map = [], {}
    for number, names in enumerate(shards, start=1):
        file_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(folder / file_name, tensors, names, progress=progress)
        weight_map.update(dict.fromkeys(names, file_name))
        files.append(file_name)
    index = {
        "metadata": {"total_size": sum(tensor_nbytes(t) for t in tensors.values())},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_FILE]

"""Writing safetensors files tensor by tensor, with shards and an index.

This module writes the bytes itself because ``safetensors.torch.save_file`` needs every tensor in memory at
once and refuses tensors that share storage (q, k and v are views of one fused tensor). Each file's header is
computed from names, shapes and dtypes alone; each tensor is then written at its place as an iterator
produces it, so one tensor is in memory at a time. huggingface_hub plans the shards, names the files and
gives the index, as for ``save_pretrained``; the files are read by ``safetensors.safe_open`` and
``from_pretrained`` as any others.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import torch
from huggingface_hub import split_state_dict_into_shards_factory
from huggingface_hub.constants import SAFETENSORS_INDEX_FILE as INDEX_FILE
from huggingface_hub.constants import SAFETENSORS_WEIGHTS_FILE_PATTERN

# the parser huggingface_hub's own sharding applies to a size string (not exported under a public name)
from huggingface_hub.serialization._base import parse_size_to_int

from chclip_convert.errors import ConversionError
from chclip_convert.progress import WRITING, OnProgress, Progress

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class TensorSpec(NamedTuple):
    """A tensor's name, shape and dtype: what is known of it without its data (a header, a plan)."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


def spec_nbytes(spec: TensorSpec) -> int:
    _, shape, dtype = spec
    return math.prod(shape) * dtype.itemsize


def _header(specs: list[TensorSpec]) -> tuple[bytes, list[int]]:
    """A file's header (its length first, padded so the data starts at a multiple of 8, as safetensors does)
    and where each tensor's data starts in the file."""
    entries: dict[str, object] = {"__metadata__": {"format": "pt"}}
    starts, offset = [], 0
    for spec in specs:
        name, shape, dtype = spec
        if dtype not in SAFETENSORS_DTYPES:
            raise ValueError(f"{name}: dtype {dtype} cannot be stored in safetensors")
        nbytes = spec_nbytes(spec)
        entries[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        starts.append(offset)
        offset += nbytes
    encoded = json.dumps(entries, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    return len(encoded).to_bytes(8, "little") + encoded, [8 + len(encoded) + start for start in starts]


def write_safetensors(
    files: dict[Path, list[TensorSpec]],
    tensors: Iterator[tuple[str, torch.Tensor]],
    *,
    progress: OnProgress | None = None,
) -> None:
    """Write each file's header, then each tensor at its place in its file as ``tensors`` yields it.

    ``tensors`` must yield each tensor of ``files`` once, in any order; each is released once written. After
    each, ``progress`` gets the bytes written of all, and the tensors written of all as ``index`` of ``count``.

    Raises:
        RuntimeError: a tensor not in ``files`` or given twice, of another shape or dtype, or one never given.
    """
    with contextlib.ExitStack() as streams:
        places: dict[str, tuple[BinaryIO, int, TensorSpec]] = {}
        for path, specs in files.items():
            header, starts = _header(specs)
            stream = streams.enter_context(open(path, "wb"))
            stream.write(header)
            stream.flush()  # the tensors go past the buffer, with pwrite
            places.update({spec[0]: (stream, start, spec) for spec, start in zip(specs, starts, strict=True)})
        _write_tensors(places, tensors, progress)


def _write_tensors(
    places: dict[str, tuple[BinaryIO, int, TensorSpec]],
    tensors: Iterator[tuple[str, torch.Tensor]],
    progress: OnProgress | None,
) -> None:
    """Each tensor at its place (an open file, an offset); see :func:`write_safetensors`."""
    total, count, written = sum(spec_nbytes(place[2]) for place in places.values()), len(places), 0
    for got, tensor in tensors:
        if got not in places:
            raise RuntimeError(f"{got} is not to be written, or was already written")
        stream, start, (name, shape, dtype) = places.pop(got)
        if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
            raise RuntimeError(f"expected {name} {list(shape)} {dtype}, got {list(tensor.shape)} {tensor.dtype}")
        data, done = raw_bytes(tensor), 0
        while done < len(data):  # pwrite may write less than asked (a signal, a full disk's last blocks)
            done += os.pwrite(stream.fileno(), data[done:], start + done)
        written += tensor.nbytes
        if progress is not None:
            progress(Progress(written, total, "B", WRITING, index=count - len(places), count=count))
        del tensor
        if not places:
            return
    raise RuntimeError(f"never given: {', '.join(sorted(places))}")


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
    progress: OnProgress | None = None,
) -> list[str]:
    """Stream ``tensors`` into ``folder`` as one file, or as shards with an index; return the file names.

    The shards are huggingface_hub's plan, as ``save_pretrained`` makes it, from the specs' sizes alone (its
    torch front end imports ``torch.distributed`` for that, a second in front of the weights).
    """
    by_name = {spec[0]: spec for spec in specs}
    split = split_state_dict_into_shards_factory(
        by_name,
        get_storage_size=spec_nbytes,
        filename_pattern=SAFETENSORS_WEIGHTS_FILE_PATTERN,
        max_shard_size=max_shard_bytes,
    )
    shards = {folder / file: [by_name[name] for name in names] for file, names in split.filename_to_tensors.items()}
    write_safetensors(shards, tensors, progress=progress)
    if not split.is_sharded:
        return list(split.filename_to_tensors)
    index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [*split.filename_to_tensors, INDEX_FILE]


def shard_size_bytes(size: int | str) -> int:
    """``size`` in bytes: an int or digits as they are, else huggingface_hub's units (``"5GB"``, ``"500MB"``)."""
    try:  # OverflowError: "infGB"
        value = int(size) if isinstance(size, int) or size.strip().isdigit() else parse_size_to_int(size)
    except (ValueError, OverflowError) as error:
        raise ConversionError(f"--max-shard-size: {error}") from error
    if value <= 0:
        raise ConversionError(f"--max-shard-size: {size!r} is not a positive size; write it like 5GB or 500MB.")
    return value

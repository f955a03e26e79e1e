"""Where each storage of a torch zip checkpoint lies, and a check that every tensor fits in its record.

``torch.load(mmap=True)`` maps the whole file and makes each storage a slice of the mapping as long as the
pickle says it is. In a damaged file that is still a well-formed zip — a storage record shorter than its
tensors claim — that slice runs into the next record or past the end of the file, silently. This module
compares every tensor's span with its record, from metadata only, before any tensor data is read.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from chclip_convert.errors import CheckpointReadError

LOCAL_HEADER = b"PK\x03\x04"
DAMAGED = "Nothing was read or written. Copy the checkpoint again, or save it again from the training run."


@dataclass(frozen=True)
class Record:
    """One storage record of the archive: its name, where its data starts in the file, its size in bytes."""

    name: str
    start: int
    size: int


def storage_records(path: Path) -> list[Record]:
    """The archive's ``…/data/<key>`` records, read from the central directory and local file headers."""
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if "/data/" in info.filename]
    records = []
    with open(path, "rb") as stream:
        for info in infos:
            stream.seek(info.header_offset)
            header = stream.read(30)
            if len(header) < 30 or header[:4] != LOCAL_HEADER:
                raise CheckpointReadError(
                    f"is damaged: record {info.filename} has no valid zip header. {DAMAGED}", path=path
                )
            name_length = int.from_bytes(header[26:28], "little")
            extra_length = int.from_bytes(header[28:30], "little")
            start = info.header_offset + 30 + name_length + extra_length
            records.append(Record(info.filename, start, info.file_size))
    return records


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested dicts, lists and tuples (the model's and the optimizer's alike)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict | list | tuple):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from tensors_in(value)


def span_bytes(tensor: torch.Tensor) -> int:
    """Bytes from the start of the tensor's storage to the end of its last element."""
    if tensor.numel() == 0:
        return 0
    last = sum((size - 1) * step for size, step in zip(tensor.shape, tensor.stride(), strict=True))
    return (tensor.storage_offset() + last + 1) * tensor.dtype.itemsize


def check_storage_spans(path: Path, tensors: dict[str, torch.Tensor], loaded: Any) -> None:
    """Raise a :class:`CheckpointReadError` naming the tensor if one of ``tensors`` reaches past its record.

    ``loaded`` is everything ``torch.load(path, mmap=True)`` returned: its storages, matched with the
    archive's records by their order in the mapping, locate the mapping itself.
    """
    by_start = {record.start: record for record in storage_records(path)}
    base = _mapping_base(path, loaded, by_start)
    for name, tensor in tensors.items():
        need = span_bytes(tensor)
        if need == 0:
            continue
        record = by_start[tensor.untyped_storage().data_ptr() - base]
        if need > record.size:
            raise CheckpointReadError(
                f"is damaged: tensor {name} needs {need:,} bytes of its storage record {record.name}, which "
                f"holds only {record.size:,} (the record was cut short inside a well-formed zip). {DAMAGED}",
                path=path,
            )


def _mapping_base(path: Path, loaded: Any, by_start: dict[int, Record]) -> int:
    """The address of the file's first byte in torch's mapping: the one that puts every storage on a record."""
    pointers = {t.untyped_storage().data_ptr() for t in tensors_in(loaded)} - {0}
    if not pointers:
        return 0
    lowest = min(pointers)
    for start in sorted(by_start):
        base = lowest - start
        if all(pointer - base in by_start for pointer in pointers):
            return base
    raise CheckpointReadError(f"is damaged: its tensors do not line up with its storage records. {DAMAGED}", path=path)

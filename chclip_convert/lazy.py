"""Tensors read one at a time from a torch zip checkpoint, so memory stays flat in the model's size.

``torch.save`` writes a zip archive: ``data.pkl`` describes the objects, and each storage is an
uncompressed record ``data/<key>``. A restricted unpickler — it accepts only tensors, storages and
ordered dicts, and raises on anything else, as ``weights_only=True`` does — turns ``data.pkl`` into
:class:`LazyTensor` handles that know their record, dtype, shape, stride and offset. ``load()`` then reads
exactly the bytes of one tensor. The optimizer's tensors get handles too, but are never read.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class NotLazyLoadable(Exception):
    """The archive holds something this reader does not handle; use ``torch.load`` instead."""


@dataclass(frozen=True)
class _StorageRef:
    record: str
    start: int  # byte offset of the record's data in the file
    nbytes: int
    dtype: torch.dtype


@dataclass(frozen=True)
class LazyTensor:
    """A handle on one tensor inside a torch zip checkpoint; ``load()`` reads its bytes."""

    archive: Path
    record: str
    start: int  # byte offset of the storage record's data in the file
    nbytes: int  # size of the storage record
    dtype: torch.dtype
    shape: torch.Size
    stride: tuple[int, ...]
    offset: int  # in elements, within the storage record

    def numel(self) -> int:
        return self.shape.numel()

    def load(self) -> torch.Tensor:
        """Read this tensor (and only its span of the storage) into a new CPU tensor."""
        element = self.dtype.itemsize
        span = 1 + sum((size - 1) * step for size, step in zip(self.shape, self.stride, strict=True))
        if self.numel() == 0:
            return torch.empty(self.shape, dtype=self.dtype)
        first, length = self.offset * element, span * element
        if first + length > self.nbytes:
            raise EOFError(f"{self.record}: tensor extends past its storage record")
        buffer = bytearray(length)
        with open(self.archive, "rb") as stream:
            stream.seek(self.start + first)
            if stream.readinto(buffer) != length:
                raise EOFError(f"{self.record} ends early: the checkpoint is truncated")
        flat = torch.frombuffer(buffer, dtype=self.dtype)
        tensor = flat.as_strided(self.shape, self.stride)
        return tensor if tensor.is_contiguous() else tensor.contiguous()


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream, archive: Path, prefix: str, records: dict[str, tuple[int, int]]) -> None:
        super().__init__(stream)
        self._archive, self._prefix, self._records = archive, prefix, records

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks: data
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise NotLazyLoadable(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        kind, dtype, key = pid[0], pid[1], pid[2]
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise NotLazyLoadable(f"persistent id {pid[:2]!r}")
        record = f"{self._prefix}data/{key}"
        if record not in self._records:
            raise NotLazyLoadable(f"no record {record}")
        return _StorageRef(record, *self._records[record], dtype)

    def _rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
        if not isinstance(storage, _StorageRef):
            raise NotLazyLoadable("tensor without a storage record")
        where = (self._archive, storage.record, storage.start, storage.nbytes)
        return LazyTensor(*where, storage.dtype, torch.Size(size), tuple(stride), offset)


def load_lazy(path: str | Path) -> Any:
    """The object a torch zip checkpoint holds, with every tensor a :class:`LazyTensor`.

    Raises:
        NotLazyLoadable: not a little-endian torch zip archive, or it holds other objects (the caller then
            uses ``torch.load(weights_only=True)``, which refuses what is unsafe with a clear message).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise NotLazyLoadable("not a zip archive")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [name for name in names if name.endswith("data.pkl")]
        if len(pickles) != 1:
            raise NotLazyLoadable("no single data.pkl record")
        prefix = pickles[0].removesuffix("data.pkl")
        if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder") != b"little":
            raise NotLazyLoadable("big-endian archive")
        if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist() if "/data/" in info.filename):
            raise NotLazyLoadable("compressed records")
        records = _data_offsets(path, [info for info in archive.infolist() if "/data/" in info.filename])
        with archive.open(pickles[0]) as stream:
            try:
                return _Unpickler(stream, path, prefix, records).load()
            except (pickle.UnpicklingError, EOFError, IndexError, TypeError, ValueError) as error:
                raise NotLazyLoadable(str(error)) from error


def _data_offsets(path: Path, infos: list[zipfile.ZipInfo]) -> dict[str, tuple[int, int]]:
    """Record name → (byte offset of its data in the file, size), read from each local file header."""
    offsets = {}
    with open(path, "rb") as stream:
        for info in infos:
            stream.seek(info.header_offset)
            header = stream.read(30)
            if len(header) < 30 or header[:4] != b"PK\x03\x04":
                raise NotLazyLoadable(f"bad local header for {info.filename}")
            name_length = int.from_bytes(header[26:28], "little")
            extra_length = int.from_bytes(header[28:30], "little")
            offsets[info.filename] = (info.header_offset + 30 + name_length + extra_length, info.file_size)
    return offsets

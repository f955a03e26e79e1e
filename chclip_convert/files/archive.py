"""torch's zip checkpoint format: where each storage of a file lies, a check that every tensor fits in its
record, and the one writer of such files.

``torch.load(mmap=True)`` maps the whole file and makes each storage a slice of the mapping as long as the
pickle says it is. In a damaged file that is still a well-formed zip — a storage record shorter than its
tensors claim — that slice runs into the next record or past the end of the file, silently. This module
compares every tensor's span with its record, from metadata only, before any tensor data is read.

:class:`ArchiveWriter` writes the format record by record, laid out as torch's own writer lays it out (each
record's data 64-byte aligned, followed by a data descriptor, zip64 where sizes or offsets need it), so that
``torch.load`` reads it in every mode, memory-mapped or not. A record's data is streamed from its pieces and
its CRC-32 computed on the way: each byte is written once, and nothing but the piece at hand is held. A record
that stays as it is in another torch archive is copied from file to file instead, with the CRC-32 recorded there.
:func:`pickled_state` writes the ``data.pkl`` that tells ``torch.load`` which record holds which tensor.
"""

from __future__ import annotations

import collections
import errno
import io
import math
import os
import pickle
import secrets
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from chclip_convert.errors import CheckpointReadError

if TYPE_CHECKING:  # torch is imported only to look at tensors: an archive is written, and copied, without it
    import torch

LOCAL_HEADER = b"PK\x03\x04"
DAMAGED = "Nothing was read or written. Copy the checkpoint again, or save it again from the training run."


@dataclass(frozen=True)
class Record:
    """One storage record of the archive: its name, where its data starts in the file, its size in bytes, and the
    CRC-32 of its data as the central directory records it."""

    name: str
    start: int
    size: int
    crc: int = 0


def storage_records(path: Path) -> list[Record]:
    """The archive's ``…/data/<key>`` records, read from the central directory and local file headers."""
    return _records(path, lambda name: "/data/" in name)


def _records(path: Path, wanted: Callable[[str], bool]) -> list[Record]:
    """The records whose names ``wanted`` accepts; raise a :class:`CheckpointReadError` for a compressed one or one
    without a valid header."""
    with zipfile.ZipFile(path) as archive:
        infos = [info for info in archive.infolist() if wanted(info.filename)]
    records = []
    with open(path, "rb") as stream:
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
                raise CheckpointReadError(
                    f"record {info.filename} is compressed; torch stores its records as they are, and a mapped "
                    f"read would see the compressed bytes. Save the checkpoint again with torch.save. {DAMAGED}",
                    path=path,
                )
            stream.seek(info.header_offset)
            header = stream.read(30)
            if len(header) < 30 or header[:4] != LOCAL_HEADER:
                raise CheckpointReadError(
                    f"is damaged: record {info.filename} has no valid zip header. {DAMAGED}", path=path
                )
            name_length = int.from_bytes(header[26:28], "little")
            extra_length = int.from_bytes(header[28:30], "little")
            start = info.header_offset + 30 + name_length + extra_length
            records.append(Record(info.filename, start, info.file_size, info.CRC))
    return records


def archive_byteorder(path: Path) -> str:
    """The byte order an archive's tensors are stored in: its ``byteorder`` record, ``little`` when absent (torch
    then assumes it)."""
    found = _records(path, lambda name: name.endswith("/byteorder"))
    if not found:
        return "little"
    with open(path, "rb") as stream:  # read as it lies: a file saved without CRC-32s records them as 0
        stream.seek(found[0].start)
        return stream.read(found[0].size).decode("ascii", "replace").strip()


def tensors_in(obj: Any, kind: type | None = None) -> Iterator[Any]:
    """Every tensor inside nested dicts, lists and tuples (the model's and the optimizer's alike): every
    ``torch.Tensor``, or every instance of ``kind`` (a tensor as an index describes one)."""
    if kind is None:
        import torch

        kind = torch.Tensor
    if isinstance(obj, kind):
        yield obj
    elif isinstance(obj, dict | list | tuple):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from tensors_in(value, kind)


def span_bytes(tensor: torch.Tensor) -> int:
    """Bytes from the start of the tensor's storage to the end of its last element."""
    if tensor.numel() == 0:
        return 0
    last = sum((size - 1) * step for size, step in zip(tensor.shape, tensor.stride(), strict=True))
    return (tensor.storage_offset() + last + 1) * tensor.dtype.itemsize


def check_storage_spans(path: Path, tensors: dict[str, torch.Tensor], loaded: Any) -> dict[str, Record]:
    """The record each of ``tensors`` lies in (those with data); raise a :class:`CheckpointReadError` naming the
    tensor if one reaches past its record.

    ``loaded`` is everything ``torch.load(path, mmap=True)`` returned: its storages, matched with the
    archive's records by their order in the mapping, locate the mapping itself.
    """
    by_start = {record.start: record for record in storage_records(path)}
    base = _mapping_base(path, loaded, by_start)
    found = {}
    for name, tensor in tensors.items():
        need = span_bytes(tensor)
        if need == 0:
            continue
        found[name] = record = by_start[tensor.untyped_storage().data_ptr() - base]
        if need > record.size:
            raise CheckpointReadError(
                f"is damaged: tensor {name} needs {need:,} bytes of its storage record {record.name}, which "
                f"holds only {record.size:,} (the record was cut short inside a well-formed zip). {DAMAGED}",
                path=path,
            )
    return found


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


ALIGNMENT = 64  # where each record's data starts, as torch writes (its ``.storage_alignment`` record)
PIECE = 1 << 20  # bytes checksummed and written at a time, while they are in the cache
ZIP64_FROM = 0xFFFFFFFF  # a size or an offset this large needs zip64: its 4-byte field then holds U32_MARK
U32_MARK = 0xFFFFFFFF
PADDING_FIELD = b"FB"  # the extra field torch pads a local header with, so that the data is aligned
DESCRIPTOR, DESCRIPTOR64 = struct.Struct("<4sIII"), struct.Struct("<4sIQQ")
LOCAL_FIELDS = struct.Struct("<4sHHHHHIIIHH")  # a local file header, then its name and extra field
CENTRAL_FIELDS = struct.Struct("<4sHHHHHHIIIHHHHHII")  # a central directory entry
END64, LOCATOR64, END = struct.Struct("<4sQHHIIQQQQ"), struct.Struct("<4sIQI"), struct.Struct("<4sHHHHIIH")
UTF8, STREAMED = 0x800, 0x8  # general-purpose flags: UTF-8 names; sizes and CRC in a descriptor after the data
# What torch.save writes beside data.pkl and the storages (torch/serialization.py, and its writer's last records).
FORMAT_RECORDS = {
    ".format_version": b"1",
    ".storage_alignment": str(ALIGNMENT).encode(),
    "byteorder": sys.byteorder.encode(),
}
VERSION_RECORD = ("version", b"3\n")
SERIALIZATION_ID = ".data/serialization_id"
# copy_file_range cannot copy here: the file systems (EXDEV), the kernel (ENOSYS) or the files (EINVAL, EOPNOTSUPP).
COPY_UNSUPPORTED = frozenset({errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP})


@dataclass(frozen=True)
class _Entry:
    name: bytes
    offset: int
    size: int
    crc: int


class ArchiveWriter:
    """A torch zip archive written to ``stream`` one record at a time; :meth:`finish` completes it.

    The layout is torch's writer's (PyTorchStreamWriter on miniz): every local header padded with an ``FB`` extra
    field so that the data starts on a multiple of :data:`ALIGNMENT`, sizes and CRC-32 in a data descriptor after
    the data, zip64 fields for a size or an offset past 4 GiB, and a zip64 end record. So ``torch.load`` finds
    each storage where it computes it would be, even with ``calculate_storage_offsets``.
    """

    def __init__(self, stream: BinaryIO, archive: str = "archive") -> None:
        self.stream, self.prefix = stream, f"{archive}/"
        self.offset = 0
        self.entries: list[_Entry] = []

    def write(self, name: str, size: int, pieces: Iterable[Any]) -> None:
        """Write the record ``name`` (below the archive's folder) of ``size`` bytes from ``pieces``, byte buffers
        (``bytes``, a uint8 NumPy array) in order; raise ``ValueError`` if they hold another number of bytes."""
        start = self._header(name, size)
        crc, written = 0, 0
        for piece in pieces:
            view = memoryview(piece).cast("B")
            for at in range(0, len(view), PIECE):
                part = view[at : at + PIECE]
                crc = zlib.crc32(part, crc)
                self._put(part)
            written += len(view)
        if written != size:
            raise ValueError(f"record {name} was to hold {size} bytes, but {written} were given")
        self._end(name, start, size, crc)

    def copy(self, name: str, source: BinaryIO, record: Record) -> None:
        """Write the record ``name`` as a copy of ``record`` of the torch archive open as ``source``, with the CRC-32
        that archive records for it: file to file, by the kernel where it can (``os.copy_file_range``), so the
        bytes never pass through this process."""
        start = self._header(name, record.size)
        self.stream.flush()
        copy_range(source.fileno(), self.stream.fileno(), record.start, record.size)
        self.offset += record.size
        self._end(name, start, record.size, record.crc)

    def _header(self, name: str, size: int) -> int:
        """Write the local header of the record ``name`` of ``size`` bytes, padded so that its data is aligned;
        return where it starts."""
        full, start = (self.prefix + name).encode(), self.offset
        zip64 = _zip64_field(size, start)
        data_start = start + LOCAL_FIELDS.size + len(full) + len(zip64) + len(_padding_field(0))
        extra = zip64 + _padding_field(-data_start % ALIGNMENT)
        flags = UTF8 | (STREAMED if size else 0)
        self._put(LOCAL_FIELDS.pack(LOCAL_HEADER, 0, flags, 0, 0, 0, 0, 0, 0, len(full), len(extra)), full, extra)
        return start

    def _end(self, name: str, start: int, size: int, crc: int) -> None:
        """After the data: its descriptor, and the record remembered for the directory."""
        if size:
            descriptor = DESCRIPTOR64 if _zip64_field(size, start) else DESCRIPTOR
            self._put(descriptor.pack(b"PK\x07\x08", crc, size, size))
        self.entries.append(_Entry((self.prefix + name).encode(), start, size, crc))

    def finish(self, payload: Any) -> None:
        """Write ``payload``'s ``data.pkl`` (see :func:`pickled_state`), the records torch writes beside it and the
        directory: the archive is complete (``stream`` stays open). Every :class:`StoredTensor` in ``payload``
        must name a record already written."""
        records = {"data.pkl": pickled_state(payload), **FORMAT_RECORDS, VERSION_RECORD[0]: VERSION_RECORD[1]}
        records[SERIALIZATION_ID] = str(secrets.randbelow(10**40)).zfill(40).encode()  # as torch's: 40 digits
        for name, data in records.items():
            self.write(name, len(data), [data])
        self._directory()

    def _directory(self) -> None:
        directory = self.offset
        for entry in self.entries:
            extra, flags = _zip64_field(entry.size, entry.offset), UTF8 | (STREAMED if entry.size else 0)
            size, offset = _u32(entry.size), _u32(entry.offset)
            fields = (0, 0, flags, 0, 0, 0, entry.crc, size, size, len(entry.name), len(extra), 0, 0, 0, 0, offset)
            self._put(CENTRAL_FIELDS.pack(b"PK\x01\x02", *fields), entry.name, extra)
        end64, count, length = self.offset, len(self.entries), self.offset - directory
        self._put(END64.pack(b"PK\x06\x06", END64.size - 12, 0x031E, 45, 0, 0, count, count, length, directory))
        self._put(LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
        entries = min(count, 0xFFFF)
        self._put(END.pack(b"PK\x05\x06", 0, 0, entries, entries, _u32(length), _u32(directory), 0))

    def _put(self, *parts: Any) -> None:
        for part in parts:
            self.stream.write(part)
            self.offset += len(part)


def copy_range(source: int, target: int, start: int, size: int) -> None:
    """Copy ``size`` bytes from ``start`` in the file ``source`` to the current position of the file ``target``
    (both descriptors): by the kernel, or where it cannot copy between these two files, read and written."""
    done = 0
    try:
        while done < size:
            copied = os.copy_file_range(source, target, size - done, start + done)
            if copied == 0:
                break
            done += copied
    except (AttributeError, OSError) as error:  # no copy_file_range here, or not between these file systems
        if isinstance(error, OSError) and error.errno not in COPY_UNSUPPORTED:
            raise
    while done < size:
        piece = memoryview(os.pread(source, min(PIECE, size - done), start + done))
        if not piece:
            raise OSError(errno.EIO, f"the file ends {size - done} bytes short of its record")
        done += len(piece)
        while piece:
            piece = piece[os.write(target, piece) :]


def _zip64_field(size: int, offset: int) -> bytes:
    """The zip64 extra field of a record: its size (twice: stored, so compressed and not) if that needs zip64, and
    its header's offset if that does; nothing if neither does."""
    values = ([size, size] if size >= ZIP64_FROM else []) + ([offset] if offset >= ZIP64_FROM else [])
    return struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""


def _u32(value: int) -> int:
    """A size or an offset as its 4-byte field holds it: itself, or the mark that says the zip64 field holds it."""
    return U32_MARK if value >= ZIP64_FROM else value


def _padding_field(length: int) -> bytes:
    return PADDING_FIELD + struct.pack("<H", length) + b"Z" * length


@dataclass(frozen=True)
class StoredTensor:
    """A tensor as ``data.pkl`` names it: its own storage, the record ``data/{key}``, its shape, and the name of
    its storage's class in torch (``HalfStorage``: the dtype, as ``torch.save`` records it)."""

    key: str
    shape: tuple[int, ...]
    storage: str


def pickled_state(obj: Any) -> bytes:
    """``data.pkl`` for ``obj`` — dicts, lists and plain values, with :class:`StoredTensor` for each tensor —
    pickled as ``torch.save`` pickles a tensor: ``_rebuild_tensor_v2`` of a storage named by a persistent id, at
    offset 0 with contiguous strides. ``torch.load(weights_only=True)`` reads it back. torch's objects are named,
    not imported: writing it needs no torch."""
    buffer = io.BytesIO()
    _TensorPickler(buffer, protocol=2).dump(obj)  # torch.save's protocol
    return buffer.getvalue()


class _Global:
    """One of torch's globals, as a pickle names it (``torch._utils._rebuild_tensor_v2``, ``torch.HalfStorage``)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> Any:  # a reduce's function must be callable; this one is only written
        raise TypeError(f"{self.module}.{self.name} is a name in a pickle, not the function")


REBUILD_TENSOR = _Global("torch._utils", "_rebuild_tensor_v2")


class _Storage:
    def __init__(self, tensor: StoredTensor) -> None:
        self.tensor = tensor


# The Python pickler: its dispatch table can write a _Global by name, where the C pickler would import the module
# behind each global it writes (torch).
class _TensorPickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._storage_types: dict[str, _Global] = {}  # one object per class, so the pickle's memo reuses it

    def _save_global(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = _save_global

    def persistent_id(self, obj: Any) -> tuple | None:
        if not isinstance(obj, _Storage):
            return None
        tensor = obj.tensor
        storage_type = self._storage_types.setdefault(tensor.storage, _Global("torch", tensor.storage))
        return "storage", storage_type, tensor.key, "cpu", math.prod(tensor.shape)

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, StoredTensor):
            return NotImplemented
        shape, hooks = tuple(obj.shape), collections.OrderedDict()  # torch.save's empty backward hooks
        return REBUILD_TENSOR, (_Storage(obj), 0, shape, contiguous_strides(shape), False, hooks)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides of a C-contiguous tensor of ``shape``, as torch gives them."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))

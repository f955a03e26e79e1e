"""Reading and writing original Chinese-CLIP checkpoints: every wrapper and prefix removed in one place, and
put back in one place.

Handles the training dict (``epoch``, ``step``, ``name``, ``state_dict``, ``optimizer``) and a bare state
dict, with or without DistributedDataParallel's ``module.`` prefix. One reader: ``torch.load`` with
``weights_only=True`` and memory-mapping, so a tensor's bytes sit in the page cache, not in the process's own
memory, and are read only when something touches them. One writer (:func:`checkpoint_writer`), which writes
each tensor into the file as it is given, a slice at a time, so writing is as flat in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import sys
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from chclip_convert.errors import CheckpointReadError, ConversionError, UnsupportedCheckpointError
from chclip_convert.files.archive import (
    ArchiveWriter,
    Record,
    StoredTensor,
    archive_byteorder,
    check_storage_spans,
    storage_records,
    tensors_in,
)
from chclip_convert.files.output import atomic_output
from chclip_convert.files.pickle_index import NotIndexable, TensorRef, read_index
from chclip_convert.files.preflight import check_checkpoint_path

if TYPE_CHECKING:  # torch is imported where tensors are read or made: a copy of records (slim) runs without it
    import torch

MODULE_PREFIX = "module."
TRAINING_KEYS = ("epoch", "step", "name")
AVERAGE_KEY = "average"  # what an average records of its inputs (chclip_convert.changes.average), read back too
TRAINING_DICT, BARE = "training dict", "bare state dict"
TRAINING_LABELS = {"epoch": "epoch", "step": "step", "name": "run"}  # TRAINING_KEYS in words


@dataclass
class SourceCheckpoint:
    """A checkpoint's model tensors, with the prefix stripped, and what was found around them."""

    path: Path
    state_dict: dict[str, torch.Tensor]  # memory-mapped views of the file (zip format); TensorRefs from an index
    wrapper: str  # "training dict" or "bare state dict"
    had_module_prefix: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # top-level entries not read (e.g. "optimizer")
    records: dict[str, Record] = field(default_factory=dict)  # the zip record each tensor lies in (zip format)

    def read(self, key: str) -> torch.Tensor:
        """The tensor ``key``: the one place the converter takes weights from, so each is read once."""
        return self.state_dict[key]


def load_checkpoint(path: str | Path) -> SourceCheckpoint:
    """Open ``path`` and return its model tensors; raise a :class:`CheckpointReadError` if it is not one.

    Args:
        path: a ``.pt`` file written by Chinese-CLIP training or by ``torch.save(model.state_dict())``.

    Returns:
        A :class:`SourceCheckpoint`; its tensors are memory-mapped views of the file (for zip-format
        files; legacy files are read whole), so the file must stay in place while they are used.

    Opening reads no tensor data, only the archive's metadata: the optimizer's tensors are mapped but
    never read. This function never modifies the file and never runs code stored in it.
    """
    path = Path(path)
    check_checkpoint_path(path)
    loaded, mapped = _torch_load(path)
    import torch

    source = _unwrap(path, loaded, torch.Tensor)
    if mapped:
        spans = check_storage_spans(path, source.state_dict, loaded)
        # Records are copied as they lie only in this machine's byte order; torch swaps the bytes of any other.
        source.records = spans if archive_byteorder(path) == sys.byteorder else {}
    return source


def index_checkpoint(path: str | Path) -> SourceCheckpoint | None:
    """``path``'s model tensors as :class:`~chclip_convert.files.pickle_index.TensorRef` descriptions, each with
    the record it fills, read without torch; ``None`` where :func:`load_checkpoint` must read the file instead.

    That is: anything the index reader does not know, a file that is not a training dict or state dict (whose
    error ``load_checkpoint`` gives), tensors among the metadata, another byte order than this machine's, or a
    tensor that is not exactly a record of its own (a view, a shared or damaged storage). Only metadata is read,
    never tensor data.
    """
    path = Path(path)
    check_checkpoint_path(path)
    try:
        loaded, folder = read_index(path)
        source = _unwrap(path, loaded, TensorRef)
        records = storage_records(path)
    except (NotIndexable, ConversionError):
        return None
    by_name = {record.name: record for record in records}
    kept = [loaded.get(key) for key in (*TRAINING_KEYS, AVERAGE_KEY)] if source.wrapper == TRAINING_DICT else []
    if (
        len(by_name) != len(records)
        or archive_byteorder(path) != sys.byteorder
        or next(tensors_in(kept, TensorRef), None) is not None  # tensors among the metadata
    ):
        return None
    if len({ref.key for ref in source.state_dict.values()}) != len(source.state_dict):
        return None  # tensors sharing a storage
    for name, ref in source.state_dict.items():
        record = by_name.get(f"{folder}/data/{ref.key}")
        if record is None or not ref.fills_storage() or not _whole_record(ref.nbytes, record):
            return None
        source.records[name] = record
    return source


def describe_training(training: dict) -> str:
    """The training metadata present in ``training``, in words: ``epoch 1, step 1000, run muge_finetune``."""
    present = [key for key in TRAINING_KEYS if training.get(key) is not None]
    return ", ".join(f"{TRAINING_LABELS[key]} {training[key]}" for key in present)


def describe_average(training: dict) -> str:
    """The inputs of an average and their weights, in words (``epoch4.pt × 0.5, epoch5.pt × 0.5``); else ``""``."""
    record = training.get(AVERAGE_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("inputs"), list):
        return ""
    weights = record.get("weights") if isinstance(record.get("weights"), list) else []
    named = [Path(str(name)).name for name in record["inputs"]]
    weights = [*weights, *[None] * len(named)][: len(named)]
    return ", ".join(f"{n} × {w:.3g}" if isinstance(w, float) else n for n, w in zip(named, weights, strict=True))


ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0a"  # pickle protocol 2, then torch's 10-byte magic number (pre-1.6 format)
WHAT_TO_GIVE = "Give the .pt file that Chinese-CLIP training (cn_clip) wrote, or a torch.save(model.state_dict())."
NOT_TORCH = f"is not a PyTorch checkpoint (neither a torch zip archive nor a legacy torch file). {WHAT_TO_GIVE}"


def _torch_load(path: Path) -> tuple[Any, bool]:
    """What the file holds, and whether its tensors are memory-mapped (zip format) or read (legacy)."""
    with open(path, "rb") as stream:
        head = stream.read(4)
    is_zip = head == ZIP_MAGIC  # also true for a truncated zip, which is_zipfile rejects
    if not is_zip and head != LEGACY_MAGIC:
        raise CheckpointReadError(NOT_TORCH, path=path)
    mmap = is_zip and zipfile.is_zipfile(path)
    if mmap and not any(name.endswith("data.pkl") for name in zipfile.ZipFile(path).namelist()):
        raise CheckpointReadError(
            f"is a zip archive but not a PyTorch checkpoint (it has no data.pkl record). {WHAT_TO_GIVE}", path=path
        )
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap), mmap
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise CheckpointReadError(_read_failure_message(is_zip, error), path=path) from error
        raise CheckpointReadError(
            "refused to load: the file contains pickled objects other than tensors and plain containers, "
            "and loading it would run code stored in it; nothing from it was run. Re-save the state dict "
            f"with `torch.save(model.state_dict(), path)` from trusted code. ({_first_line(error)})",
            path=path,
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        raise CheckpointReadError(_read_failure_message(is_zip, error), path=path) from error


def _read_failure_message(is_zip: bool, error: BaseException) -> str:
    text = _first_line(error)
    if is_zip:
        return (
            "cannot be read: it starts like a PyTorch checkpoint but looks truncated or corrupt (an interrupted "
            f"copy or save?). Copy or save it again. ({text})"
        )
    return f"{NOT_TORCH} ({text})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _unwrap(path: Path, loaded: Any, tensor_type: type) -> SourceCheckpoint:
    if not isinstance(loaded, dict):
        raise UnsupportedCheckpointError(
            f"holds a {type(loaded).__name__}, not a state dict or a training checkpoint dict.", path=path
        )
    if isinstance(loaded.get("state_dict"), dict):
        raw, wrapper = loaded["state_dict"], TRAINING_DICT
        kept = (*TRAINING_KEYS, AVERAGE_KEY)
        metadata = {key: loaded[key] for key in kept if key in loaded}
        skipped = sorted(str(key) for key in loaded if key != "state_dict" and key not in kept)
    else:
        raw, wrapper, metadata, skipped = loaded, BARE, {}, []
    not_tensors = sorted(str(key) for key, value in raw.items() if not isinstance(value, tensor_type))
    if not_tensors:
        shown = ", ".join(not_tensors[:5]) + (" …" if len(not_tensors) > 5 else "")
        raise UnsupportedCheckpointError(
            f"the state dict holds entries that are not tensors ({shown}); it is not a model state dict.", path=path
        )
    if not raw:
        raise UnsupportedCheckpointError("the state dict is empty.", path=path)
    state_dict, had_prefix = strip_module_prefix(raw)
    return SourceCheckpoint(path, state_dict, wrapper, had_prefix, _jsonable(metadata), skipped)


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool]:
    """Remove DistributedDataParallel's ``module.`` prefix where present; say whether any key had it."""
    had_prefix = any(key.startswith(MODULE_PREFIX) for key in state_dict)
    stripped = {key.removeprefix(MODULE_PREFIX): value for key, value in state_dict.items()}
    return stripped, had_prefix


def _jsonable(metadata: dict[str, Any]) -> dict[str, Any]:
    result = {}
    for key, value in metadata.items():
        try:
            json.dumps(value)
            result[key] = value
        except TypeError:
            result[key] = repr(value)
    return result


# Elements a tensor op takes at a time while writing (a cast here, a sum in an average): fewer than torch's parallel
# grain size (32,768), so that each op runs on the calling thread. Ops of 64 Ki elements ran on torch's two threads:
# 1.0 s to average five ViT-B-16 inputs on an idle CPU, but 41 s while another process kept one core busy, each op's
# threads waiting for each other; 16 Ki elements took 1.6 to 2.2 s, busy or not.
SLICE = 1 << 14


class CheckpointWriter:
    """The checkpoint being written (see :func:`checkpoint_writer`): each tensor goes into the file when it is added,
    as a record of its own; the metadata and the names are written when the block ends."""

    def __init__(self, archive: ArchiveWriter, inputs: contextlib.ExitStack) -> None:
        self.archive, self.inputs = archive, inputs  # the inputs records are copied from, open until the end
        self.tensors: dict[str, StoredTensor] = {}
        self.metadata: dict[str, Any] = {}  # epoch, step, name, …: a training dict; empty with ``bare``
        self.bare = False
        self.prefix = MODULE_PREFIX  # put before every key, as cn_clip's training (DistributedDataParallel) writes
        self._cast_buffers: dict[torch.dtype, torch.Tensor] = {}
        self._opened: dict[Path, BinaryIO] = {}

    def add(
        self,
        key: str,
        tensor: torch.Tensor,
        dtype: torch.dtype | None = None,
        *,
        source: SourceCheckpoint | None = None,
    ) -> None:
        """Write ``tensor`` as ``key``, cast to ``dtype`` if given (see :meth:`add_slices`).

        Meant for a memory-mapped view of an input, whose bytes are read once, straight into the file; a tensor that
        is not contiguous is copied first. Given the ``source`` it is ``key`` of, uncast, and alone in its record
        there, the record is copied file to file instead (:meth:`ArchiveWriter.copy`): the fastest way, as ``cp``.
        """
        dtype = tensor.dtype if dtype is None else dtype
        record = source.records.get(key) if source is not None and dtype == tensor.dtype else None
        if record is None or not _fills(tensor, record):
            self.add_slices(key, tuple(tensor.shape), dtype, [tensor.detach().reshape(-1)])
            return
        self.copy(key, tuple(tensor.shape), storage_name(dtype), source.path, record)

    def copy(self, key: str, shape: tuple[int, ...], storage: str, path: Path, record: Record) -> None:
        """Write ``key``, of ``shape`` and the storage class ``storage``, as a copy of ``record`` of the torch archive
        ``path``, which it must fill (:meth:`ArchiveWriter.copy`): file to file, no tensor needed."""
        stored = self._next(key, shape, storage)
        self.archive.copy(f"data/{stored.key}", self._input(path), record)
        self.tensors[key] = stored

    def add_slices(self, key: str, shape: tuple[int, ...], dtype: torch.dtype, slices: Iterable[torch.Tensor]) -> None:
        """Write ``key``, a tensor of ``shape`` and ``dtype``, from ``slices``: contiguous 1-D tensors holding its
        elements in order, each written before the next is asked for (so that one buffer can serve them all). A slice
        of another dtype is cast, :data:`SLICE` elements at a time, through a buffer kept for the next.

        Raises ``ValueError`` if ``key`` was written already, or the slices hold another number of elements."""
        import torch

        stored = self._next(key, shape, storage_name(dtype))
        pieces = (part.view(torch.uint8).numpy() for piece in slices for part in self._in_dtype(piece, dtype, key))
        self.archive.write(f"data/{stored.key}", math.prod(shape) * dtype.itemsize, pieces)
        self.tensors[key] = stored

    def finish(self) -> None:
        """Write the state dict's names — inside a training dict with the metadata unless ``bare`` — and close."""
        state = {f"{self.prefix}{key}": stored for key, stored in self.tensors.items()}
        self.archive.finish(state if self.bare else {**self.metadata, "state_dict": state})

    def _next(self, key: str, shape: tuple[int, ...], storage: str) -> StoredTensor:
        """What the next record will hold: ``key``'s tensor, which must not be written yet."""
        if key in self.tensors:
            raise ValueError(f"{key} was written already")
        return StoredTensor(str(len(self.tensors)), shape, storage)

    def _input(self, path: Path) -> BinaryIO:
        if path not in self._opened:
            self._opened[path] = self.inputs.enter_context(open(path, "rb"))  # noqa: SIM115 (closed by the stack)
        return self._opened[path]

    def _in_dtype(self, piece: torch.Tensor, dtype: torch.dtype, key: str) -> Iterator[torch.Tensor]:
        if piece.dim() != 1 or not piece.is_contiguous():
            raise ValueError(f"a slice of {key} is {list(piece.shape)}, not contiguous and 1-D")
        if piece.dtype == dtype:
            yield piece
            return
        if dtype not in self._cast_buffers:
            import torch

            self._cast_buffers[dtype] = torch.empty(SLICE, dtype=dtype)
        buffer = self._cast_buffers[dtype]
        for start in range(0, piece.numel(), SLICE):
            part = piece[start : start + SLICE]
            yield buffer[: part.numel()].copy_(part)


def _fills(tensor: torch.Tensor, record: Record) -> bool:
    """Whether ``tensor`` is exactly the data of ``record`` (see :func:`_whole_record`)."""
    return tensor.is_contiguous() and tensor.storage_offset() == 0 and _whole_record(tensor.nbytes, record)


def _whole_record(nbytes: int, record: Record) -> bool:
    """Whether ``nbytes`` from a record's start are all of it, and its CRC-32 was written (torch can skip it)."""
    return nbytes == record.size and (record.crc != 0 or record.size == 0)


def storage_name(dtype: torch.dtype) -> str:
    """The name of the storage class ``torch.save`` records for ``dtype`` (``HalfStorage``)."""
    import torch

    return torch.storage._dtype_to_storage_type_map()[dtype]


@contextlib.contextmanager
def checkpoint_writer(output: str | Path, *, overwrite: bool) -> Iterator[CheckpointWriter]:
    """Yield a :class:`CheckpointWriter` writing ``output`` atomically
    (:func:`~chclip_convert.files.output.atomic_output`): in place when the block ends without error, loadable by
    ``torch.load`` (``weights_only=True``, memory-mapped or not) as if ``torch.save`` had written it.

    Each tensor is written once, into the file being written, as it is added: nothing is written twice, and on
    an error (a full disk: ``OSError``) the partial file goes with the temporary folder.
    """
    with (
        atomic_output(output, overwrite=overwrite, folder=False) as partial,
        open(partial, "wb") as stream,
        contextlib.ExitStack() as inputs,
    ):
        writer = CheckpointWriter(ArchiveWriter(stream), inputs)
        yield writer
        writer.finish()

"""What a torch zip checkpoint's ``data.pkl`` says of each tensor, read without torch.

``slim`` copies a checkpoint's weight records from file to file; for that it needs only which record holds
which tensor, its storage class (the dtype) and its shape, not the tensors. :func:`read_index` unpickles
``data.pkl`` with an unpickler that knows the few names ``torch.save`` writes for tensors and state dicts and
builds a :class:`TensorRef` for each tensor, so no torch import stands in front of the copy. Anything else in the
pickle — any other global, an unusual persistent id — stops it with :class:`NotIndexable`, and the caller reads
the file with ``torch.load(weights_only=True)`` instead, which decides what is allowed. Nothing stored in the
file is run either way.
"""

from __future__ import annotations

import collections
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chclip_convert.files.archive import contiguous_strides

STORAGE_ITEMSIZE = {  # torch.save's storage classes (``torch.HalfStorage``), by the bytes of one element
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
}  # fmt: skip


class NotIndexable(Exception):
    """The file holds something this reader does not know; ``torch.load`` must read it."""


@dataclass(frozen=True, slots=True)  # slots: a pickle's BUILD cannot rewrite one behind the checks
class TensorRef:
    """A tensor as ``data.pkl`` describes it: the record ``data/{key}`` holding its storage of ``numel`` elements
    of the class ``storage``, and where in it the tensor lies."""

    storage: str
    key: str
    numel: int
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """The bytes of the tensor's own elements."""
        return math.prod(self.shape) * STORAGE_ITEMSIZE[self.storage]

    def fills_storage(self) -> bool:
        """Whether the tensor is its whole storage, contiguous from its first byte."""
        contiguous = self.stride == contiguous_strides(self.shape) or math.prod(self.shape) <= 1
        return self.offset == 0 and contiguous and math.prod(self.shape) == self.numel


@dataclass(frozen=True, slots=True)
class _StorageType:
    """``torch.HalfStorage`` and its kind, as the reader takes them: the class's name."""

    name: str


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A storage named by a persistent id: only a tensor rebuilt on it becomes a :class:`TensorRef`."""

    storage: str
    key: str
    numel: int


def _count(value: Any) -> int:
    """``value`` if it is a non-negative int (a size, a stride, an offset), else :class:`NotIndexable`."""
    if type(value) is not int or value < 0:
        raise NotIndexable(f"a tensor with the size or offset {value!r:.40}")
    return value


class _RebuildTensor:
    """``torch._utils._rebuild_tensor_v2`` as this reader takes it: it returns a :class:`TensorRef` for a storage,
    an offset, a shape and strides of non-negative ints and torch's defaults for the rest, else raises
    :class:`NotIndexable` (gradients, hooks, metadata, anything else)."""

    __slots__ = ()  # nothing a pickle's BUILD could set

    def __call__(self, storage: Any, offset: Any, shape: Any, stride: Any, *rest: Any) -> TensorRef:
        if not isinstance(storage, _StorageRef) or not isinstance(shape, tuple) or not isinstance(stride, tuple):
            raise NotIndexable("a tensor without a storage record")
        if len(rest) > 3 or len(shape) != len(stride):
            raise NotIndexable("a tensor rebuilt from other arguments than torch.save writes")
        requires_grad, hooks, metadata = (*rest, *(False, None, None)[len(rest) :])  # torch's defaults where absent
        if requires_grad is not False or hooks or metadata:
            raise NotIndexable("a tensor with gradients, hooks or metadata")
        shape, stride = tuple(map(_count, shape)), tuple(map(_count, stride))
        return TensorRef(storage.storage, storage.key, storage.numel, _count(offset), shape, stride)


_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor(),
}


class _IndexUnpickler(pickle.Unpickler):
    """An unpickler that knows only :data:`_GLOBALS` and torch's storage classes; anything else is
    :class:`NotIndexable`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_ITEMSIZE:
            return _StorageType(name)
        raise NotIndexable(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise NotIndexable(f"persistent id {pid!r:.60}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(key, str):
            raise NotIndexable(f"storage key {key!r:.40}")
        return _StorageRef(storage_type.name, key, _count(numel))


def read_index(path: Path) -> tuple[Any, str]:
    """What ``torch.load(path)`` would return, with a :class:`TensorRef` for each tensor, and the archive's folder
    (its records are ``{folder}/data/{key}``).

    Raises:
        NotIndexable: the file is not a torch zip archive, or holds anything but tensors, dicts, lists and plain
            values (``torch.load`` must read it; it also gives the errors for a damaged file).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise NotIndexable("no single data.pkl")
            with archive.open(pickles[0]) as stream:
                return _IndexUnpickler(stream, encoding="utf-8").load(), pickles[0].removesuffix("/data.pkl")
    except NotIndexable:
        raise
    except Exception as error:  # a damaged or unusual file: torch.load reads it and says what is wrong
        raise NotIndexable(f"{type(error).__name__}: {error}") from error

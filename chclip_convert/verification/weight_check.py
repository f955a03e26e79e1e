"""The one comparison of the tensors a folder must hold with the tensors it holds, key by key, both ways.

What a folder must hold comes from the source checkpoint through the mapping table
(:func:`chclip_convert.conversion.state_dict.apply_steps`); every key is then either equal or named under one kind of
difference: missing, unexpected, shape, dtype or bytes — verify's report words for the statuses of
:mod:`chclip_convert.tensor_stats` (:data:`STATUS_OF`), compared bit for bit. Verification, the weight statistics
and the tests use it. Buffers that older transformers versions saved beside the weights are set aside when
they hold what transformers rebuilds (see :func:`compare_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from chclip_convert.conversion.state_dict import dtype_name
from chclip_convert.mapping.report import collapse_layers
from chclip_convert.names import MISSING, UNEXPECTED
from chclip_convert.tensor_stats import (
    DIFFERS,
    EQUAL,
    ONLY_IN_A,
    ONLY_IN_B,
    SHAPE_DIFFERS,
    count_differing,
    placement,
    same_bytes,
)

SHAPE, DTYPE, BYTES = "shape", "dtype", "bytes"
KINDS = (MISSING, UNEXPECTED, SHAPE, DTYPE, BYTES)  # the report's words, in the order it lists them
# Each word's status in the one vocabulary (A what the folder must hold, B what it holds); bit for bit, a
# tensor of another dtype or other bytes differs.
STATUS_OF = {
    EQUAL: EQUAL, MISSING: ONLY_IN_A, UNEXPECTED: ONLY_IN_B, SHAPE: SHAPE_DIFFERS, DTYPE: DIFFERS, BYTES: DIFFERS
}  # fmt: skip


@dataclass(frozen=True)
class KeyDifference:
    """One key whose written tensor is not the expected one; ``written``/``expected`` say how."""

    key: str
    kind: str
    written: str = ""
    expected: str = ""

    def __str__(self) -> str:
        if self.kind in (MISSING, UNEXPECTED):
            side = self.expected if self.kind == MISSING else self.written
            return f"{self.key} {side}".rstrip()
        return f"{self.key}: {self.written}, expected {self.expected}"


@dataclass
class FolderComparison:
    """Every key of the expected and the written state dicts: ``equal``, one :class:`KeyDifference`, or
    ``set_aside`` (a rebuilt buffer holding what transformers rebuilds: key → why it is no weight)."""

    equal: list[str] = field(default_factory=list)
    differences: list[KeyDifference] = field(default_factory=list)
    set_aside: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def total(self) -> int:
        return len(self.equal) + len(self.differences)

    def of_kind(self, kind: str) -> list[KeyDifference]:
        return [difference for difference in self.differences if difference.kind == kind]

    @property
    def keys(self) -> list[str]:
        """Every key that differs, sorted."""
        return sorted(difference.key for difference in self.differences)

    def status(self, key: str) -> str:
        """``"equal"`` or the kind of difference of ``key``."""
        return next((d.kind for d in self.differences if d.key == key), EQUAL)

    def describe(self, limit: int = 6) -> str:
        """One line: how many keys are equal, then each kind of difference with its first keys named."""
        parts = [f"{len(self.equal)}/{self.total} tensors equal"]
        for kind in KINDS:
            found = self.of_kind(kind)
            if not found:
                continue
            if kind in (MISSING, UNEXPECTED) and len(found) > limit:
                names = collapse_layers([d.key for d in found])
            else:
                names = [str(d) for d in found]
            shown = ", ".join(names[:limit]) + (f" … and {len(names) - limit} more" if len(names) > limit else "")
            parts.append(f"{kind} ({len(found)}): {shown}")
        if self.set_aside:
            parts.append(f"{len(self.set_aside)} rebuilt buffer(s) set aside: {', '.join(sorted(self.set_aside))}")
        return "; ".join(parts)


def compare_state(
    expected: Mapping[str, torch.Tensor | None] | Iterable[tuple[str, torch.Tensor | None]],
    written: Mapping[str, torch.Tensor],
    *,
    buffers: Mapping[str, str] | None = None,
) -> FolderComparison:
    """Compare every key both ways: names, shapes, dtypes, then the raw bytes.

    Args:
        expected: target name → the tensor the table derives from the source (``None`` where the table's op
            cannot apply to the source tensor, e.g. a fused q/k/v whose rows do not split in three); a mapping,
            or (name, tensor) pairs, compared as they come so that only one expected tensor is held at a time.
        written: target name → the tensor the folder holds.
        buffers: written names that are buffers transformers rebuilds at load, with why they are no weights
            (:data:`chclip_convert.mapping.table.REVERSE_IGNORED`); one not expected is set aside when it holds exactly
            what transformers rebuilds (``arange`` for ``position_ids``), else it is unexpected, named with what
            it holds.
    """
    pairs = expected.items() if isinstance(expected, Mapping) else expected
    comparison, seen = FolderComparison(), set()
    for key, tensor in pairs:
        seen.add(key)
        difference = _difference(key, tensor, written.get(key), True)
        if difference is None:
            comparison.equal.append(key)
        else:
            comparison.differences.append(difference)
    for key in (key for key in written if key not in seen):
        why, tensor = (buffers or {}).get(key), written[key]
        difference = _difference(key, None, tensor, False) if why is None else _buffer_difference(key, tensor)
        if difference is None:
            comparison.set_aside[key] = f"holds exactly {_rebuilt(key, tensor)[0]}, a {why}"
        else:
            comparison.differences.append(difference)
    comparison.equal.sort()
    comparison.differences.sort(key=lambda difference: difference.key)
    return comparison


def _difference(
    key: str, expected: torch.Tensor | None, written: torch.Tensor | None, is_expected: bool
) -> KeyDifference | None:
    if is_expected and expected is None and written is not None:
        return KeyDifference(key, SHAPE, f"shape {list(written.shape)}", "the table's op cannot split the source")
    where = placement(None if expected is None else expected.shape, None if written is None else written.shape)
    if where == ONLY_IN_A:
        return KeyDifference(key, MISSING, expected=f"[shape {list(expected.shape)}]" if expected is not None else "")
    if where == ONLY_IN_B:
        return KeyDifference(key, UNEXPECTED, written=f"[shape {list(written.shape)}]")
    if where == SHAPE_DIFFERS:
        return KeyDifference(key, SHAPE, f"shape {list(written.shape)}", f"{list(expected.shape)}")
    if expected.dtype != written.dtype:
        return KeyDifference(key, DTYPE, f"dtype {dtype_name(written.dtype)}", dtype_name(expected.dtype))
    if not same_bytes(expected, written):
        return KeyDifference(key, BYTES, f"{count_differing(expected, written)} value(s) differ", "the source's")
    return None


# What transformers rebuilds at load for a saved buffer, by the buffer's last name: in words, and as a function of
# its length (the buffers are [1, length], int64).
_REBUILT = {
    "position_ids": ("arange({n})", lambda n: torch.arange(n, dtype=torch.int64)[None]),
    "token_type_ids": ("zeros({n})", lambda n: torch.zeros(1, n, dtype=torch.int64)),
}


def _rebuilt(key: str, tensor: torch.Tensor) -> tuple[str, torch.Tensor] | None:
    """What transformers rebuilds at load for the buffer ``key`` of ``tensor``'s length (in words, and the
    tensor), or ``None`` for a name it rebuilds no buffer of."""
    found = _REBUILT.get(key.rsplit(".", 1)[-1])
    if found is None:
        return None
    length = tensor.shape[-1] if tensor.dim() else 0
    return found[0].format(n=length), found[1](length)


def _buffer_difference(key: str, tensor: torch.Tensor) -> KeyDifference | None:
    """``None`` when a saved buffer holds exactly what transformers rebuilds; else an unexpected key, saying
    what it holds (older transformers versions load such a buffer as it is)."""
    rebuilt = _rebuilt(key, tensor)
    if rebuilt is not None and same_bytes(tensor, rebuilt[1]):
        return None
    held = f"[shape {list(tensor.shape)}, {dtype_name(tensor.dtype)}]"
    wanted = f"other values than {rebuilt[0]}" if rebuilt else "a buffer transformers does not rebuild"
    return KeyDifference(key, UNEXPECTED, written=f"{held} holding {wanted}")

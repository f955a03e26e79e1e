"""What differs between two checkpoints, tensor by tensor, in transformers' namespace, and its readable form.

Either side may be an original checkpoint (either layout, any dtype) or a converted folder
(:mod:`chclip_convert.conversion.views`). Streamed: at most one tensor of each side is held at once, compared in
float64 chunks of bounded size (:mod:`chclip_convert.tensor_stats`), and the optimizer's state is never read.
Every name is one of that module's statuses: ``only in A``, ``only in B``, ``shape differs``, ``equal`` or
``differs``. ``equal`` means bit-identical after mapping, compared in float64 (so dtype is ignored: fp16 weights
and their fp32 copy are equal).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from chclip_convert.conversion.views import open_tensors
from chclip_convert.mapping.parts import LAYER, Part, fold_layers, part_of, span_label
from chclip_convert.mapping.table import split_layer_index
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.tensor_stats import (
    DIFFERS,
    EQUAL,
    ONLY_IN_A,
    ONLY_IN_B,
    SHAPE_DIFFERS,
    PairStats,
    grouped_change,
    json_number,
    one_thread,
    pair_names,
    pair_stats,
)

SHOWN = 20  # names listed per heading of the text before "… and N more"


@dataclass(frozen=True)
class TensorChange(PairStats):
    """One tensor both sides hold with one shape: how B differs from A (:class:`PairStats`), under its name."""

    key: str = ""

    @property
    def status(self) -> str:
        """:data:`~chclip_convert.tensor_stats.EQUAL` or :data:`~chclip_convert.tensor_stats.DIFFERS`."""
        return EQUAL if self.equal else DIFFERS

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "relative_change": json_number(self.relative_change),
            "max_abs": json_number(self.max_abs),
            "cosine": json_number(self.cosine),
            "norm_a": json_number(self.norm_a),
            "norm_b": json_number(self.norm_b),
        }


def measure_change(key: str, a: torch.Tensor, b: torch.Tensor) -> TensorChange:
    """Compare ``a`` and ``b`` (one shape, any dtypes) in float64 chunks: one pass over each
    (:func:`chclip_convert.tensor_stats.pair_stats`)."""
    with one_thread():  # the passes are short: a second thread waiting for a busy core only slows them
        found = pair_stats(a, b)
    return TensorChange(**{field.name: getattr(found, field.name) for field in fields(found)}, key=key)


@dataclass(frozen=True)
class PartChange:
    """A layer's (or section's) tensors together: ‖B − A‖ / ‖A‖ over all of them."""

    part: Part
    tensors: int
    differing: int
    relative_change: float
    largest: TensorChange | None  # the tensor that changed most, relatively


@dataclass
class CheckpointDiff:
    """Every tensor name of A and B under one status (:mod:`chclip_convert.tensor_stats`): only in A, only in B,
    shape differs, or one of the ``changes``, each equal or differs."""

    a: Path
    b: Path
    a_kind: str
    b_kind: str
    only_in_a: list[str]
    only_in_b: list[str]
    shape_differs: dict[str, tuple[list[int], list[int]]]  # name → (A's shape, B's shape)
    changes: list[TensorChange]  # every tensor both hold with one shape, sorted by name
    not_compared: dict[str, str] = field(default_factory=dict)  # name → why it is left out

    @property
    def equal(self) -> list[str]:
        return [c.key for c in self.changes if c.equal]

    @property
    def differs(self) -> list[TensorChange]:
        return [c for c in self.changes if not c.equal]

    @property
    def identical(self) -> bool:
        """Same names, same shapes, every tensor bit-identical."""
        return not (self.only_in_a or self.only_in_b or self.shape_differs or self.differs)

    def parts(self) -> list[PartChange]:
        """The changes per part, in tower → section → layer order."""
        grouped: dict[Part, list[TensorChange]] = {}
        for change in self.changes:
            grouped.setdefault(part_of(change.key), []).append(change)
        result = []
        for part in sorted(grouped, key=Part.sort_key):
            members = grouped[part]
            moved = [c for c in members if not c.equal]
            largest = max(moved, key=lambda c: c.relative_change, default=None)
            relative = grouped_change((c.norm_diff, c.norm_a) for c in members)
            result.append(PartChange(part, len(members), len(moved), relative, largest))
        return result

    def to_dict(self) -> dict:
        return {
            "a": str(self.a),
            "b": str(self.b),
            "a_kind": self.a_kind,
            "b_kind": self.b_kind,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "shape_differs": sorted(self.shape_differs),
            "equal": self.equal,
            "differs": [c.to_dict() for c in self.differs],
            "shapes": {key: {"a": a, "b": b} for key, (a, b) in sorted(self.shape_differs.items())},
            "not_compared": self.not_compared,
        }

    def verdict(self) -> str:
        """One line: identical, or how many tensors differ and how many names could not be compared."""
        compared = len(self.changes)
        if self.identical:
            text = f"Identical: all {compared} tensors bit-identical after mapping."
        else:
            text = f"{len(self.differs)} of {compared} tensors differ; {self._counts()}."
        if self.not_compared:
            text += f" {len(self.not_compared)} not compared (the conversion leaves them out)."
        return text

    def to_text(self) -> str:
        """A readable summary per tower and layer (runs of unchanged layers folded into one line), then every
        name that could not be compared."""
        lines = [
            f"A: {self.a} ({self.a_kind})",
            f"B: {self.b} ({self.b_kind})",
            f"{len(self.changes)} tensors in both: {len(self.equal)} equal, {len(self.differs)} differ; "
            f"{self._counts()}.",
        ]
        if self.identical:
            lines.append("Identical: every tensor is bit-identical after mapping.")
        by_tower: dict[str, list[PartChange]] = {}
        for part in self.parts():
            by_tower.setdefault(part.part.tower, []).append(part)
        for tower, parts in by_tower.items():
            lines += _tower_lines(tower, parts)
        lines += _names(ONLY_IN_A, self.only_in_a)
        lines += _names(ONLY_IN_B, self.only_in_b)
        lines += _names(SHAPE_DIFFERS, [f"{key}  A {a} vs B {b}" for key, (a, b) in sorted(self.shape_differs.items())])
        lines += _names("not compared", [f"{key}: {why}" for key, why in sorted(self.not_compared.items())])
        return "\n".join(lines)

    def _counts(self) -> str:
        """``only in A 0, only in B 0, shape differs 0``."""
        counts = ((ONLY_IN_A, self.only_in_a), (ONLY_IN_B, self.only_in_b), (SHAPE_DIFFERS, self.shape_differs))
        return ", ".join(f"{status} {len(names)}" for status, names in counts)


def _tower_lines(tower: str, parts: list[PartChange]) -> list[str]:
    """One line for a tower with nothing changed; else its name, then a line a part, indented."""
    if not any(p.differing for p in parts):
        count = sum(p.tensors for p in parts)
        return [f"{tower}: all {count} tensors equal" if count > 1 else f"{tower}: its one tensor is equal"]
    return [f"{tower}:", *(f"  {line}" for line in _part_lines(parts))]


def _part_lines(parts: list[PartChange]) -> list[str]:
    """One line a part; consecutive unchanged layers as one ``layers 0–9  equal`` line."""
    by_part = {change.part: change for change in parts}
    lines = []
    for item in fold_layers(by_part, lambda part: not by_part[part].differing):
        if isinstance(item, list):
            lines.append(f"{span_label(item):<14} equal ({sum(by_part[part].tensors for part in item)} tensors)")
        else:
            lines.append(_part_line(by_part[item]))
    return lines


def _part_line(part: PartChange) -> str:
    label = part.part.label
    if not part.differing:
        return f"{label:<14} equal ({part.tensors} tensors)"
    text = f"{label:<14} {part.relative_change:.2e}  ({part.differing} of {part.tensors} differ"
    if part.largest is not None and part.tensors > 1:
        text += f"; most: {_short(part.largest.key, part)} {part.largest.relative_change:.2e}"
    return text + ")"


def _short(key: str, part: PartChange) -> str:
    """The name within its layer (``attention.self.query.weight``), or the whole name outside layers."""
    if part.part.section != LAYER:
        return key
    return split_layer_index(key)[0].split("{i}", 1)[1].lstrip(".") or key


def _names(heading: str, names: list[str]) -> list[str]:
    """``Only in A (3):`` and the names, one a line, the first :data:`SHOWN` of them."""
    if not names:
        return []
    shown = [f"  {name}" for name in names[:SHOWN]]
    if len(names) > SHOWN:
        shown.append(f"  … and {len(names) - SHOWN} more")
    return [f"{heading[0].upper()}{heading[1:]} ({len(names)}):", *shown]


def diff_checkpoints(a: str | Path, b: str | Path, *, progress: OnProgress | None = None) -> CheckpointDiff:
    """Compare checkpoint or folder ``a`` with ``b``, tensor by tensor (see the module).

    ``progress`` gets the tensors compared of all, after each one (stage ``"comparing tensors"``).

    Raises:
        ConversionError: (a subclass) naming the path, if either is not a checkpoint or converted folder.

    Example:
        >>> diff_checkpoints("pretrained.pt", "epoch3.pt").to_text()  # doctest: +SKIP
    """
    with open_tensors(a) as first, open_tensors(b) as second:
        shapes_a = {name: first.spec(name).shape for name in first.names()}
        shapes_b = {name: second.spec(name).shape for name in second.names()}
        names = pair_names(shapes_a, shapes_b)
        same = names.same_shape
        shapes = {name: (list(shapes_a[name]), list(shapes_b[name])) for name in names.shape_differs}
        changes = []
        for done, name in enumerate(same, 1):
            changes.append(measure_change(name, first.read(name), second.read(name)))
            if progress is not None:
                progress(Progress(done, len(same), stage="comparing tensors"))
        left_out = {**first.not_compared, **second.not_compared}
        return CheckpointDiff(
            first.path, second.path, first.kind, second.kind, names.only_in_a, names.only_in_b, shapes, changes,
            left_out,
        )  # fmt: skip

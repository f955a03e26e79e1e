"""The readable form of a :class:`chclip_convert.changes.diff.CheckpointDiff`: per tower, per layer, with runs of
unchanged layers folded into one line, then every name that could not be compared."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chclip_convert.changes.diff import LAYER, PartChange, fold_layers, span_label
from chclip_convert.mapping.table import split_layer_index

if TYPE_CHECKING:
    from chclip_convert.changes.diff import CheckpointDiff

SHOWN = 20  # names listed per heading before "… and N more"


def diff_text(diff: CheckpointDiff) -> str:
    equal, differs = len(diff.equal), len(diff.differs)
    lines = [
        f"A: {diff.a} ({diff.a_kind})",
        f"B: {diff.b} ({diff.b_kind})",
        f"{len(diff.changes)} tensors in both: {equal} equal, {differs} differ; "
        f"only in A {len(diff.only_in_a)}, only in B {len(diff.only_in_b)}, "
        f"shape differs {len(diff.shape_differs)}.",
    ]
    if diff.identical:
        lines.append("Identical: every tensor is bit-identical after mapping.")
    by_tower: dict[str, list[PartChange]] = {}
    for part in diff.parts():
        by_tower.setdefault(part.part.tower, []).append(part)
    for tower, parts in by_tower.items():
        if not any(p.differing for p in parts):
            count = sum(p.tensors for p in parts)
            lines.append(f"{tower}: all {count} tensors equal" if count > 1 else f"{tower}: its one tensor is equal")
            continue
        lines.append(f"{tower}:")
        lines += [f"  {line}" for line in _part_lines(parts)]
    lines += _names("Only in A", diff.only_in_a)
    lines += _names("Only in B", diff.only_in_b)
    shapes = [f"{key}  A {a} vs B {b}" for key, (a, b) in sorted(diff.shape_differs.items())]
    lines += _names("Shape differs", shapes)
    lines += _names("Not compared", [f"{key}: {why}" for key, why in sorted(diff.not_compared.items())])
    return "\n".join(lines)


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
    if not names:
        return []
    shown = [f"  {name}" for name in names[:SHOWN]]
    if len(names) > SHOWN:
        shown.append(f"  … and {len(names) - SHOWN} more")
    return [f"{heading} ({len(names)}):", *shown]

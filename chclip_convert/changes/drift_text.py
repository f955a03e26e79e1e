"""The readable form of a :class:`chclip_convert.changes.drift.Drift`: the epochs, what moved, then one table
per comparison (a row per layer or section, a column per epoch; what stayed bit-identical folded)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chclip_convert.changes.diff import TOWERS, fold_layers, span_label
from chclip_convert.units import human_size

if TYPE_CHECKING:
    from chclip_convert.changes.drift import Drift, EpochInfo

UNCHANGED = "0"  # bit-identical: shown apart from a small change


def epoch_table(infos: list[EpochInfo]) -> list[str]:
    """A line per checkpoint: name, epoch, step, weights' size, file size, dtype, and what it repeats."""
    rows = [("file", "epoch", "step", "weights", "file size", "dtype", "")]
    for info in infos:
        note = f"same epoch and step as {info.same_as}: left out" if info.same_as else ""
        rows.append((
            info.name, _blank(info.epoch), _blank(info.step), human_size(info.weight_bytes),
            human_size(info.file_bytes), info.dtype, note,
        ))  # fmt: skip
    return _columns(rows)


def drift_text(drift: Drift) -> str:
    lines = [
        f"Reference: {drift.reference.path} ({drift.reference.kind})",
        "",
        *epoch_table(drift.epochs + drift.left_out),
        *(f"skipped: {entry}" for entry in drift.skipped),  # named where the epochs are, never dropped silently
        "",
        "What moved, in any epoch:",
        *(f"  {line}" for line in moved_lines(drift)),
    ]
    heads = [f"e{info.epoch}" if info.epoch is not None else info.path.stem for info in drift.epochs]
    for title, values in (
        ("Relative change from the reference, ‖W − W_ref‖ / ‖W_ref‖", drift.vs_reference),
        ("Relative change from the epoch before, ‖W − W_prev‖ / ‖W_prev‖", drift.vs_previous),
    ):
        lines += ["", title, *_columns([("tower", "part", *heads), *_table_rows(drift, values)])]
    if drift.problems:
        lines += ["", "Problems:", *(f"  {problem}" for problem in drift.problems)]
    return "\n".join(lines)


def _table_rows(drift: Drift, values: dict) -> list[tuple]:
    """A row per part; a tower unchanged throughout as one row, consecutive unchanged layers as one."""
    rows: list[tuple] = []
    zeros = [UNCHANGED] * len(drift.epochs)
    for tower in TOWERS:
        parts = [part for part in drift.parts if part.tower == tower]
        if parts and all(_unchanged(values[part]) for part in parts):
            rows.append((tower, f"all {len(parts)} parts" if len(parts) > 1 else parts[0].label, *zeros))
            continue
        for item in fold_layers(parts, lambda part: _unchanged(values[part])):
            if isinstance(item, list):
                rows.append((tower, span_label(item), *zeros))
            else:
                rows.append((tower, item.label, *map(_value, values[item])))
    return rows


def _unchanged(values: list[float]) -> bool:
    return all(value == 0 for value in values)


def _value(value: float) -> str:
    if value != value:  # NaN: no tensor of the part could be compared in this epoch (see the problems)
        return "n/a"
    return UNCHANGED if value == 0 else f"{value:.2e}"


def _blank(value) -> str:
    return "" if value is None else str(value)


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def moved_lines(drift: Drift | None) -> list[str]:
    """Per tower, which parts moved in some epoch and which stayed bit-identical in every one: exact
    verdicts, no float digits (they are what the stored outputs hold)."""
    lines: list[str] = []
    if drift is None:
        return lines
    for tower in TOWERS:
        parts = [part for part in drift.parts if part.tower == tower]
        if not parts:
            continue
        moved = [part for part in parts if drift.moved(part)]
        if not moved:
            lines.append(f"{tower}: unchanged in every epoch (bit-identical to the reference)")
            continue
        still = [part for part in parts if not drift.moved(part)]
        lines.append(f"{tower}: moved: {_labels(moved)}")
        if still:
            lines.append(f"{' ' * len(tower)}  unchanged: {_labels(still)}")
    return lines


def _labels(parts) -> str:
    """``layers 9–11, projection``: consecutive layers folded."""
    return ", ".join(span_label(item) if isinstance(item, list) else item.label for item in fold_layers(parts, bool))

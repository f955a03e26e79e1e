"""The readable form of a :class:`chclip_convert.training_run.Drift`: the epochs, then one table per
comparison (a row per layer or section, a column per epoch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .text import human_size

if TYPE_CHECKING:
    from .training_run import Drift, EpochInfo

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
    ]
    heads = [f"e{info.epoch}" if info.epoch is not None else info.path.stem for info in drift.epochs]
    for title, values in (
        ("Relative change from the reference, ‖W − W_ref‖ / ‖W_ref‖", drift.vs_reference),
        ("Relative change from the epoch before, ‖W − W_prev‖ / ‖W_prev‖", drift.vs_previous),
    ):
        rows = [("tower", "part", *heads)]
        rows += [(part.tower, part.label, *map(_value, values[part])) for part in drift.parts]
        lines += ["", title, *_columns(rows)]
    if drift.problems:
        lines += ["", "Problems:", *(f"  {problem}" for problem in drift.problems)]
    return "\n".join(lines)


def _value(value: float) -> str:
    if value != value:  # NaN: no tensor of the part could be compared in this epoch (see the problems)
        return "n/a"
    return UNCHANGED if value == 0 else f"{value:.2e}"


def _blank(value) -> str:
    return "" if value is None else str(value)


def _columns(rows: list[tuple]) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]

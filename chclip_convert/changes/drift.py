"""A training run at a glance: its epochs from their metadata, and how far each layer moved — from the
checkpoint training started from, and from one epoch to the next (docs/training-runs.md).

cn_clip's training writes ``epoch{N}.pt`` each epoch, ``epoch_{E}_{S}.pt`` every S steps if asked, and
``epoch_latest.pt`` (a copy of the newest), each a dict with ``epoch``, ``step``, ``name``, ``state_dict`` and
``optimizer``. All files are memory-mapped at once and walked tensor name by tensor name: at most three tensors
(the reference's, the previous epoch's and this epoch's) are held at a time.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from chclip_convert.conversion.state_dict import dtype_elements, dtype_name
from chclip_convert.conversion.views import CHECKPOINT, TensorSource, open_tensors
from chclip_convert.errors import CheckpointReadError, ConversionError
from chclip_convert.files.checkpoint import AVERAGE_KEY
from chclip_convert.files.preflight import looks_converted
from chclip_convert.mapping.parts import TOWERS, Part, fold_layers, part_of, span_label
from chclip_convert.names import CHECKPOINT_SUFFIXES, RUN_SUBFOLDER
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.tensor_stats import grouped_change, json_number, one_thread, pair_names, pair_stats
from chclip_convert.units import human_size

AVERAGE_LABEL = "avg"  # an average's column
UNCHANGED = "0"  # bit-identical, in the text's tables: shown apart from a small change


@dataclass(frozen=True)
class EpochInfo:
    """A checkpoint as its metadata describes it; no tensor data is read to make one."""

    path: Path
    kind: str  # "original checkpoint" or "converted folder"
    epoch: int | None
    step: int | None
    run_name: str | None
    weight_bytes: int  # the model tensors' bytes (the file also holds the optimizer's)
    file_bytes: int
    dtype: str  # by element count, largest first: "float32", "float16 + float32"
    same_as: str | None = None  # the file this one repeats (same epoch and step), if any
    average_of: tuple[str, ...] = ()  # an average's inputs, by file name (chclip_convert.changes.average)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def label(self) -> str:
        """A column's head in the tables and figures: ``e3``, ``avg`` for an average, or the file's stem for a file
        without an epoch."""
        if self.average_of:
            return AVERAGE_LABEL
        return f"e{self.epoch}" if self.epoch is not None else self.path.stem

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "name": self.name, "kind": self.kind, "epoch": self.epoch, "step": self.step,
            "run_name": self.run_name, "weight_bytes": self.weight_bytes, "file_bytes": self.file_bytes,
            "dtype": self.dtype, "same_as": self.same_as, "average_of": list(self.average_of),
        }  # fmt: skip


def describe(path: str | Path) -> EpochInfo:
    """Epoch, step, run name, sizes and dtype of a checkpoint or converted folder, from metadata alone."""
    with open_tensors(path) as source:
        return describe_source(source)


def describe_source(source: TensorSource) -> EpochInfo:
    """:func:`describe` for a checkpoint or folder already open."""
    specs = [source.spec(name) for name in source.names()]
    meta = source.metadata
    folder = source.kind != CHECKPOINT
    size = sum(f.stat().st_size for f in source.path.iterdir() if f.is_file()) if folder else source.path.stat().st_size
    return EpochInfo(
        path=source.path, kind=source.kind, epoch=_int(meta.get("epoch")), step=_int(meta.get("step")),
        run_name=meta.get("name") if isinstance(meta.get("name"), str) else None,
        weight_bytes=sum(math.prod(spec.shape) * spec.dtype.itemsize for spec in specs), file_bytes=size,
        dtype=" + ".join(dtype_name(dtype) for dtype, _ in dtype_elements(specs).most_common()),
        average_of=_averaged(meta),
    )  # fmt: skip


def _averaged(meta: dict) -> tuple[str, ...]:
    """The file names an average's record lists as its inputs; ``()`` for any other checkpoint."""
    record = meta.get(AVERAGE_KEY)
    inputs = record.get("inputs") if isinstance(record, dict) else None
    return tuple(Path(str(name)).name for name in inputs) if isinstance(inputs, list) else ()


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def find_checkpoints(folder: str | Path) -> list[Path]:
    """The checkpoint files of a run folder: in its ``checkpoints/`` subfolder (cn_clip's layout), else in it.
    The subfolder comes first, as a run folder may also hold the checkpoint training started from (the demo
    run's ``pretrained.pt``). Entries that cannot be read are left out: :func:`skipped_checkpoints` names them."""
    readable, skipped = _run_entries(folder)
    if readable:
        return readable
    folder = Path(folder).expanduser()
    cannot = f" Named but unreadable: {'; '.join(skipped)}." if skipped else ""
    raise CheckpointReadError(
        f"holds no checkpoint files ({', '.join(CHECKPOINT_SUFFIXES)}), nor does its {RUN_SUBFOLDER}/ subfolder."
        + cannot,
        path=folder,
    )


def skipped_checkpoints(given: Sequence[str | Path]) -> list[str]:
    """For one run folder ``given``: each entry with a checkpoint's name that cannot be read (a link to a
    missing file — an unmounted disk —, a file without read permission), with why; else nothing."""
    paths = [Path(p).expanduser() for p in given]
    return _run_entries(paths[0])[1] if len(paths) == 1 and is_run_folder(paths[0]) else []


def _run_entries(folder: str | Path) -> tuple[list[Path], list[str]]:
    """The checkpoint-named entries of the run folder's checkpoint place, split into readable files (in name
    order) and ``"name: why it cannot be read"`` lines."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointReadError("is not a folder of checkpoints.", path=folder)
    for place in (folder / RUN_SUBFOLDER, folder):
        if not place.is_dir():
            continue
        entries = sorted(
            (p for p in place.glob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and not p.is_dir()),
            key=lambda p: natural_key(p.name),
        )
        if entries:
            why = {p: _unreadable(p) for p in entries}
            return [p for p in entries if not why[p]], [f"{p} {why[p]}" for p in entries if why[p]]
    return [], []


def _unreadable(path: Path) -> str:
    """Why ``path`` cannot be read as a checkpoint file, or ``""``."""
    if path.is_symlink() and not path.exists():
        return f"is a link to {os.readlink(path)}, which does not exist (a disk not mounted?)"
    if not path.is_file():
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "cannot be read (permission denied)"
    return ""


def run_checkpoints(given: Sequence[str | Path]) -> list[Path]:
    """The checkpoint files ``given`` means: one run folder's (see :func:`find_checkpoints`), or the files."""
    paths = [Path(p).expanduser() for p in given]
    if len(paths) == 1 and is_run_folder(paths[0]):
        return find_checkpoints(paths[0])
    folders = [p for p in paths if is_run_folder(p)]
    if folders:
        raise CheckpointReadError(
            "is a folder given among other paths; give a run folder on its own, or its checkpoint files.",
            path=folders[0],
        )
    return paths


def read_run(checkpoints: Sequence[str | Path], *, exclude: str | Path | None = None) -> list[EpochInfo]:
    """Describe each checkpoint (see :func:`run_checkpoints`; ``exclude``, the reference, left out) in
    training order (epoch, step, name). A file repeating another — the same run name, epoch, step and weights'
    size, as ``epoch_latest.pt`` repeats the epoch it was saved with — is marked ``same_as`` that one."""
    return mark_repeats(describe(path) for path in _run_paths(checkpoints, exclude))


def _run_paths(checkpoints: Sequence[str | Path], exclude: str | Path | None) -> list[Path]:
    excluded = Path(exclude).expanduser().resolve() if exclude is not None else None
    return [path for path in run_checkpoints(checkpoints) if path.resolve() != excluded]


def mark_repeats(infos) -> list[EpochInfo]:
    """``infos`` in training order, each repeating an earlier one marked ``same_as`` it (see :func:`read_run`)."""
    seen: dict[tuple, str] = {}
    result = []
    for info in sorted(infos, key=_training_order):
        key = (info.run_name, info.epoch, info.step, info.weight_bytes, info.average_of)
        if info.epoch is not None and info.step is not None and key in seen:
            info = replace(info, same_as=seen[key])
        elif info.epoch is not None and info.step is not None:
            seen[key] = info.name
        result.append(info)
    return result


def without_repeats(paths: Sequence[Path]) -> tuple[list[Path], list[EpochInfo]]:
    """The checkpoints to convert, and those left out as repeats; a file that cannot be described is kept,
    to fail with its own error when its turn comes."""
    infos, unreadable = [], []
    for path in paths:
        try:
            infos.append(describe(path))
        except ConversionError:
            unreadable.append(path)
    marked = mark_repeats(infos)
    return [info.path for info in marked if info.same_as is None] + unreadable, [i for i in marked if i.same_as]


def is_run_folder(path: str | Path) -> bool:
    """A folder that is not itself a converted model: its checkpoints are what is meant."""
    path = Path(path).expanduser()
    return path.is_dir() and not looks_converted(path)


def _training_order(info: EpochInfo) -> tuple:
    latest = info.path.stem.endswith("latest")  # with no metadata, epoch_latest.pt comes last
    averaged = bool(info.average_of)  # after every epoch: its change "from the epoch before" is from the last one
    return (averaged, info.epoch is None, info.epoch or 0, info.step or 0, latest, natural_key(info.name))


def natural_key(name: str) -> list:
    """``epoch2.pt`` before ``epoch10.pt``: digit runs compare as numbers."""
    return [(0, int(piece), "") if piece.isdigit() else (1, 0, piece) for piece in re.split(r"(\d+)", name)]


@dataclass
class Drift:
    """Per part (a tower's layer or section) and per epoch: ‖W − W_ref‖ / ‖W_ref‖ and ‖W − W_prev‖ / ‖W_prev‖,
    each over all the part's tensors. The first epoch's previous is the reference."""

    reference: EpochInfo
    epochs: list[EpochInfo]
    parts: list[Part]
    vs_reference: dict[Part, list[float]]
    vs_previous: dict[Part, list[float]]
    left_out: list[EpochInfo] = field(default_factory=list)  # repeats of another epoch (same_as)
    problems: list[str] = field(default_factory=list)  # tensors an epoch lacks or holds with another shape
    skipped: list[str] = field(default_factory=list)  # a run folder's entries that cannot be read, with why

    def moved(self, part: Part) -> bool:
        """Whether the part changed in some epoch (NaN, where no tensor of it could be compared, is not)."""
        return any(value > 0 for value in self.vs_reference[part])

    def to_dict(self) -> dict:
        return {
            "reference": self.reference.to_dict(),
            "epochs": [info.to_dict() for info in self.epochs],
            "left_out": [info.to_dict() for info in self.left_out],
            "parts": [
                {
                    "tower": part.tower,
                    "part": part.label,
                    "vs_reference": [json_number(value) for value in self.vs_reference[part]],
                    "vs_previous": [json_number(value) for value in self.vs_previous[part]],
                }
                for part in self.parts
            ],
            "problems": self.problems,
            "skipped": self.skipped,
        }

    def to_text(self) -> str:
        """The epochs, what moved, then one table per comparison: a row per layer or section, a column per
        epoch, what stayed bit-identical folded."""
        lines = [
            f"Reference: {self.reference.path} ({self.reference.kind})",
            "",
            *epoch_table(self.epochs + self.left_out),
            *(f"skipped: {entry}" for entry in self.skipped),  # named where the epochs are, never dropped silently
            "",
            "What moved, in any epoch:",
            *(f"  {line}" for line in moved_lines(self)),
        ]
        heads = [info.label for info in self.epochs]
        for title, values in (
            ("Relative change from the reference, ‖W − W_ref‖ / ‖W_ref‖", self.vs_reference),
            ("Relative change from the epoch before, ‖W − W_prev‖ / ‖W_prev‖", self.vs_previous),
        ):
            lines += ["", title, *_columns([("tower", "part", *heads), *self._table_rows(values)])]
        if self.problems:
            lines += ["", "Problems:", *(f"  {problem}" for problem in self.problems)]
        return "\n".join(lines)

    def _table_rows(self, values: dict[Part, list[float]]) -> list[tuple]:
        """A row per part; a tower unchanged throughout as one row, consecutive unchanged layers as one."""
        rows: list[tuple] = []
        zeros = [UNCHANGED] * len(self.epochs)
        for tower in TOWERS:
            parts = [part for part in self.parts if part.tower == tower]
            if parts and all(_unchanged(values[part]) for part in parts):
                rows.append((tower, f"all {len(parts)} parts" if len(parts) > 1 else parts[0].label, *zeros))
                continue
            for item in fold_layers(parts, lambda part: _unchanged(values[part])):
                if isinstance(item, list):
                    rows.append((tower, span_label(item), *zeros))
                else:
                    rows.append((tower, item.label, *map(_value, values[item])))
        return rows


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


def moved_lines(drift: Drift | None) -> list[str]:
    """Per tower, which parts moved in some epoch and which stayed bit-identical in every one: exact
    verdicts, no float digits (they are what the stored outputs hold); nothing without a drift."""
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


def _labels(parts: list[Part]) -> str:
    """``layers 9–11, projection``: consecutive layers folded."""
    return ", ".join(span_label(item) if isinstance(item, list) else item.label for item in fold_layers(parts, bool))


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


def measure_drift(
    reference: str | Path, checkpoints: Sequence[str | Path], *, progress: OnProgress | None = None
) -> Drift:
    """How every part of both towers moved, per epoch, from ``reference`` and from the epoch before.

    Args:
        reference: the checkpoint training started from (original ``.pt`` or converted folder).
        checkpoints: the run's checkpoints, or one run folder; ordered by their epoch and step, and a file
            repeating another's epoch and step (``epoch_latest.pt``) is left out.
        progress: gets the tensors measured of all, over every epoch (stage ``"measuring drift"``).

    Raises:
        ConversionError: (a subclass) naming the file, if one is not a checkpoint or converted folder.
    """
    reference = Path(reference).expanduser()
    with ExitStack() as stack:  # each file opened once: described, then read
        opened = [stack.enter_context(open_tensors(path)) for path in _run_paths(checkpoints, reference)]
        run = mark_repeats(describe_source(source) for source in opened)
        epochs = [info for info in run if info.same_as is None]
        if not epochs:
            given = checkpoints[0] if len(checkpoints) == 1 else ", ".join(map(str, checkpoints))
            raise CheckpointReadError("holds no checkpoint to compare besides the reference.", path=given)
        by_path = {source.path: source for source in opened}
        sources = [by_path[info.path] for info in epochs]
        ref = stack.enter_context(open_tensors(reference))
        names, held = ref.names(), [set(source.names()) for source in sources]
        # part → from the reference and from the epoch before → per epoch: each tensor's (‖ΔW‖, ‖W‖)
        norms: dict[Part, list[list[list[tuple[float, float]]]]] = {}
        problems = _problems(ref, sources)
        total, done = len(names) * len(epochs), 0
        stack.enter_context(one_thread())  # the passes are short: a second thread waiting for a core slows them
        for name in names:
            part, shape = part_of(name), ref.spec(name).shape
            found = norms.setdefault(part, [[[] for _ in epochs], [[] for _ in epochs]])
            base = previous = ref.read(name)
            for index, source in enumerate(sources):
                done += 1
                if progress is not None:
                    progress(Progress(done, total, stage="measuring drift"))
                if name not in held[index] or source.spec(name).shape != shape:
                    continue  # listed in problems; a part with nothing compared shows NaN
                current = source.read(name)
                from_ref = pair_stats(base, current)
                from_prev = from_ref if previous is base else pair_stats(previous, current)
                for which, change in enumerate((from_ref, from_prev)):
                    found[which][index].append((change.norm_diff, change.norm_a))
                previous = current
        parts = sorted(norms, key=Part.sort_key)
        vs_reference, vs_previous = (
            {part: [grouped_change(epoch) for epoch in norms[part][which]] for part in parts} for which in (0, 1)
        )
        return Drift(
            describe_source(ref), epochs, parts, vs_reference, vs_previous,
            [info for info in run if info.same_as is not None], problems, skipped_checkpoints(checkpoints),
        )  # fmt: skip


def _problems(reference: TensorSource, sources: list[TensorSource]) -> list[str]:
    """For each epoch, the tensors it lacks, holds with another shape, or holds beyond the reference's, named."""
    problems = []
    ref_shapes = {name: reference.spec(name).shape for name in reference.names()}
    for source in sources:
        names = pair_names(ref_shapes, {name: source.spec(name).shape for name in source.names()})
        for what, keys in (
            ("lacks {} tensor(s) of the reference", names.only_in_a),
            ("holds {} tensor(s) with another shape than the reference's", names.shape_differs),
            ("holds {} tensor(s) the reference lacks (not compared)", names.only_in_b),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f" … and {len(keys) - 5} more" if len(keys) > 5 else "")
                problems.append(f"{source.path.name} {what.format(len(keys))}: {shown}")
    return problems

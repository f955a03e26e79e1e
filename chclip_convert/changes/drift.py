"""A training run at a glance: its epochs from their metadata, and how far each layer moved — from the
checkpoint training started from, and from one epoch to the next.

cn_clip's training writes ``epoch{N}.pt`` each epoch, ``epoch_{E}_{S}.pt`` every S steps if asked, and
``epoch_latest.pt`` (a copy of the newest), each a dict with ``epoch``, ``step``, ``name``, ``state_dict`` and
``optimizer``. Reading is streamed: all files are memory-mapped at once and walked tensor name by tensor name,
so each file's weights are read once per :func:`measure_drift` (a fused q/k/v weight is sliced three ways from
the same mapped pages), at most three tensors (the reference's, the previous epoch's and this epoch's) are held
at a time, and memory does not grow with the number of epochs. Files in torch's legacy (pre-1.6, non-zip)
format cannot be mapped: each is read whole when opened, so for those memory does grow with the epochs.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from chclip_convert.changes.diff import Part, measure_change, part_of
from chclip_convert.conversion.state_dict import dtype_name
from chclip_convert.conversion.views import CHECKPOINT, TensorSource, open_tensors
from chclip_convert.errors import CheckpointReadError, ConversionError
from chclip_convert.files.preflight import RUN_SUBFOLDER, looks_converted
from chclip_convert.names import CHECKPOINT_SUFFIXES

DriftProgress = Callable[[int, int], None]  # (tensors done, tensors in all) over every epoch


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

    @property
    def name(self) -> str:
        return self.path.name

    def to_dict(self) -> dict:
        return {
            "path": str(self.path), "name": self.name, "kind": self.kind, "epoch": self.epoch, "step": self.step,
            "run_name": self.run_name, "weight_bytes": self.weight_bytes, "file_bytes": self.file_bytes,
            "dtype": self.dtype, "same_as": self.same_as,
        }  # fmt: skip


def describe(path: str | Path) -> EpochInfo:
    """Epoch, step, run name, sizes and dtype of a checkpoint or converted folder, from metadata alone."""
    with open_tensors(path) as source:
        return describe_source(source)


def describe_source(source: TensorSource) -> EpochInfo:
    """:func:`describe` for a checkpoint or folder already open."""
    specs = [source.spec(name) for name in source.names()]
    elements: Counter[str] = Counter()
    for spec in specs:
        elements[dtype_name(spec.dtype)] += math.prod(spec.shape)
    meta = source.metadata
    folder = source.kind != CHECKPOINT
    size = sum(f.stat().st_size for f in source.path.iterdir() if f.is_file()) if folder else source.path.stat().st_size
    return EpochInfo(
        path=source.path, kind=source.kind, epoch=_int(meta.get("epoch")), step=_int(meta.get("step")),
        run_name=meta.get("name") if isinstance(meta.get("name"), str) else None,
        weight_bytes=sum(math.prod(spec.shape) * spec.dtype.itemsize for spec in specs), file_bytes=size,
        dtype=" + ".join(name for name, _ in elements.most_common()),
    )  # fmt: skip


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
    if len(paths) == 1 and is_run_folder(paths[0]):
        return _run_entries(paths[0])[1]
    return []


def _run_entries(folder: str | Path) -> tuple[list[Path], list[str]]:
    """The checkpoint-named entries of the run folder's checkpoint place, split into readable files (in name
    order) and ``"name: why it cannot be read"`` lines."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointReadError("is not a folder of checkpoints.", path=folder)
    for place in (folder / RUN_SUBFOLDER, folder):
        entries = (
            sorted(
                (p for p in place.glob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and not p.is_dir()),
                key=lambda p: natural_key(p.name),
            )
            if place.is_dir()
            else []
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
        key = (info.run_name, info.epoch, info.step, info.weight_bytes)
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
    return (info.epoch is None, info.epoch or 0, info.step or 0, latest, natural_key(info.name))


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
                    "vs_reference": _jsonable(self.vs_reference[part]),
                    "vs_previous": _jsonable(self.vs_previous[part]),
                }
                for part in self.parts
            ],
            "problems": self.problems,
            "skipped": self.skipped,
        }

    def to_text(self) -> str:
        from chclip_convert.changes.drift_text import drift_text

        return drift_text(self)


def _jsonable(values: list[float]) -> list[float | None]:
    return [value if math.isfinite(value) else None for value in values]


def measure_drift(
    reference: str | Path, checkpoints: Sequence[str | Path], *, progress: DriftProgress | None = None
) -> Drift:
    """How every part of both towers moved, per epoch, from ``reference`` and from the epoch before.

    Args:
        reference: the checkpoint training started from (original ``.pt`` or converted folder).
        checkpoints: the run's checkpoints, or one run folder; ordered by their epoch and step, and a file
            repeating another's epoch and step (``epoch_latest.pt``) is left out.

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
        sums = _Sums(len(epochs))
        problems = _missing(ref, sources)
        total, done = len(names) * len(epochs), 0
        for name in names:
            part, shape = part_of(name), ref.spec(name).shape
            base = previous = ref.read(name)
            for index, source in enumerate(sources):
                done += 1
                if progress is not None:
                    progress(done, total)
                if name not in held[index] or source.spec(name).shape != shape:
                    sums.touch(part)  # listed in problems; a part with nothing compared shows NaN
                    continue
                current = source.read(name)
                from_ref = measure_change(name, base, current)
                from_prev = from_ref if previous is base else measure_change(name, previous, current)
                sums.add(part, index, from_ref, from_prev)
                previous = current
        return Drift(
            describe_source(ref), epochs, sums.parts(), sums.ratios(0), sums.ratios(1),
            [info for info in run if info.same_as is not None], problems, skipped_checkpoints(checkpoints),
        )  # fmt: skip


def _missing(reference, sources) -> list[str]:
    problems = []
    ref_names = set(reference.names())
    for source in sources:
        names = set(source.names())
        missing = sorted(ref_names - names)
        reshaped = sorted(n for n in ref_names & names if source.spec(n).shape != reference.spec(n).shape)
        extra = sorted(names - ref_names)
        for what, keys in (
            ("lacks {} tensor(s) of the reference", missing),
            ("holds {} tensor(s) with another shape than the reference's", reshaped),
            ("holds {} tensor(s) the reference lacks (not compared)", extra),
        ):
            if keys:
                shown = ", ".join(keys[:5]) + (f" … and {len(keys) - 5} more" if len(keys) > 5 else "")
                problems.append(f"{source.path.name} {what.format(len(keys))}: {shown}")
    return problems


class _Sums:
    """Σ‖ΔW‖² and Σ‖W‖² per part, per epoch, for the two comparisons, and how many tensors each sum holds."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.sums: dict[Part, list[list[float]]] = {}  # part → [diff² ref, a² ref, diff² prev, a² prev, count]

    def touch(self, part: Part) -> list[list[float]]:
        return self.sums.setdefault(part, [[0.0] * self.epochs for _ in range(5)])

    def add(self, part: Part, index: int, from_ref, from_prev) -> None:
        rows = self.touch(part)
        values = (from_ref.norm_diff, from_ref.norm_a, from_prev.norm_diff, from_prev.norm_a)
        for row, value in zip(rows, values, strict=False):
            row[index] += value * value
        rows[4][index] += 1

    def parts(self) -> list[Part]:
        return sorted(self.sums, key=Part.sort_key)

    def ratios(self, which: int) -> dict[Part, list[float]]:
        """Per part, per epoch: √(Σ‖ΔW‖² / Σ‖W‖²); NaN where no tensor of the part was compared."""
        result = {}
        for part in self.parts():
            rows = self.sums[part]
            result[part] = [
                _ratio(d, a) if count else math.nan
                for d, a, count in zip(rows[2 * which], rows[2 * which + 1], rows[4], strict=True)
            ]
        return result


def _ratio(diff2: float, base2: float) -> float:
    return math.sqrt(diff2 / base2) if base2 > 0 else (0.0 if diff2 == 0 else math.inf)

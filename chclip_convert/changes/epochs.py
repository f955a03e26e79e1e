"""Convert the epochs you choose in one go: one progress for all, each folder checked against its checkpoint
afterwards, and a folder that still matches its checkpoint left as it is (docs/training-runs.md says when a
folder matches, and what happens to one that does not).
"""

from __future__ import annotations

import math
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from chclip_convert.changes.diff import CheckpointDiff, diff_checkpoints
from chclip_convert.changes.drift import describe
from chclip_convert.conversion.pipeline import convert_checkpoint
from chclip_convert.conversion.provenance import KNOWN_ALGORITHMS, recorded_algorithm, weights_digest
from chclip_convert.conversion.summary import TRAINING_FIELD, CardOptions
from chclip_convert.conversion.views import ConvertedFolder, MappedCheckpoint
from chclip_convert.errors import ConversionError, OutputError
from chclip_convert.files.checkpoint import TRAINING_KEYS
from chclip_convert.files.output import output_lock
from chclip_convert.files.preflight import converted_name, looks_converted
from chclip_convert.files.records import read_report, recorded_source
from chclip_convert.progress import OnProgress, Progress

CONVERTED, UP_TO_DATE, FAILED = "converted", "up to date", "failed"


@dataclass(frozen=True)
class EpochConversion:
    """What happened to one checkpoint: its folder, the outcome, and the check or the error in words."""

    checkpoint: Path
    folder: Path
    outcome: str  # CONVERTED, UP_TO_DATE or FAILED
    detail: str

    def to_dict(self) -> dict:
        return {**asdict(self), "checkpoint": str(self.checkpoint), "folder": str(self.folder)}


def check_into(into: str | Path) -> Path:
    """``into`` as a path, or an :class:`OutputError` if it, or what would hold it, is a file."""
    into = Path(into).expanduser()
    blocker = next((p for p in (into, *into.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "" if blocker == into else f" ({blocker} is a file)"
        raise OutputError(f"is a file, not a folder{where}; give the folder to write the converted folders into.",
                          path=into)  # fmt: skip
    return into


def folder_for(checkpoint: str | Path, into: str | Path) -> Path:
    """``into/`` :func:`~chclip_convert.files.preflight.converted_name`, the checkpoint's path taken from wherever
    it was given (``run-a/checkpoints/epoch3.pt`` → ``into/run-a-epoch3-hf``)."""
    return Path(into).expanduser() / converted_name(Path(os.path.abspath(Path(checkpoint).expanduser())))


def convert_epochs(
    checkpoints: Sequence[str | Path],
    into: str | Path,
    *,
    dtype: str = "auto",
    overwrite: bool = False,
    progress: OnProgress | None = None,
    on_result: Callable[[EpochConversion], None] | None = None,
    card: CardOptions | None = None,
) -> list[EpochConversion]:
    """Convert each checkpoint into ``into/<run>-<name>-hf`` (see :func:`folder_for`), skipping folders that
    still match, and check each written folder with :func:`chclip_convert.changes.diff.diff_checkpoints`.

    ``progress`` gets the bytes over all, the checkpoint at hand (``item``, its path; ``index`` of ``count``) and
    its stage: ``"checking"``, ``"converting"``, ``"verifying"``, then ``"done"``. A problem with one checkpoint
    is reported in its :class:`EpochConversion` (also passed to ``on_result`` as each ends) and the others go
    on. An exception raised by ``progress`` (a cancel button's) stops the batch: the folder being written or
    checked is removed, those done are kept. ``card`` is what each folder's model card tells the Hub.
    """
    into = check_into(into)
    paths = [Path(os.path.abspath(Path(p).expanduser())) for p in checkpoints]  # the folders record where from
    folders = [folder_for(path, into) for path in paths]
    sizes = [_weight_bytes(path) for path in paths]
    total, before, results = sum(sizes), 0, []
    for index, (path, folder, size) in enumerate(zip(paths, folders, sizes, strict=True), 1):

        def report(stage: str, done: int, path=path, index=index, before=before) -> None:
            if progress is not None:
                try:
                    progress(Progress(before + done, total, "B", stage, item=str(path), index=index, count=len(paths)))
                except Exception as error:  # the caller's (a cancel button's): it stops the batch
                    raise _Stopped(error) from error

        earlier = folders.index(folder)
        try:
            if earlier < index - 1:
                raise OutputError(
                    f"is also where {paths[earlier].name} goes ({paths[earlier]}): both have one name in folders "
                    "that do not tell them apart; convert them into different folders.",
                    path=folder,
                )
            result = _convert_one(path, folder, size, dtype, overwrite, report, card or CardOptions())
        except _Stopped as stopped:
            raise stopped.error from None
        except ConversionError as error:
            result = EpochConversion(path, folder, FAILED, str(error))
        except Exception as error:  # anything else failing one checkpoint fails it alone, said in one line
            first_line = (str(error).strip().splitlines() or [""])[0]  # a C++ error runs over many lines
            result = EpochConversion(path, folder, FAILED, f"{path}: failed: {type(error).__name__}: {first_line}")
        results.append(result)
        if on_result is not None:
            on_result(result)
        try:
            report("done", size)  # up to date or failed too: the bytes over all reach the total
        except _Stopped as stopped:  # a Cancel while the checkpoint was checked or failed
            raise stopped.error from None
        before += size
    return results


class _Stopped(BaseException):
    """Carries what the caller's progress raised past the per-checkpoint handlers, which catch ``Exception``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def _convert_one(path: Path, folder: Path, size: int, dtype: str, overwrite: bool, report, card) -> EpochConversion:
    """One checkpoint: left as it is if its folder still matches (no lock needed, so a read-only place of up to
    date folders works), else converted and checked holding the folder's lock, its state checked again under it."""
    report("checking", 0)
    if _folder_state(folder, path, dtype) == UP_TO_DATE:
        return _up_to_date(path, folder)
    with output_lock(folder):  # one writer, from this check to the folder's own check
        return _write_one(path, folder, size, dtype, overwrite, report, card)


def _up_to_date(path: Path, folder: Path) -> EpochConversion:
    return EpochConversion(path, folder, UP_TO_DATE, "still matches its checkpoint; left as it is")


def _write_one(path: Path, folder: Path, size: int, dtype: str, overwrite: bool, report, card) -> EpochConversion:
    state = _folder_state(folder, path, dtype)
    if state == UP_TO_DATE:  # written by another writer meanwhile
        return _up_to_date(path, folder)
    if state == FOREIGN:  # not a converted model: what it holds is the user's, overwrite or not
        raise OutputError(
            "exists and is not a converted model (no config.json beside weights); left as it is. "
            "Choose another folder, or move its files away.",
            path=folder,
        )
    if state == OTHER and not overwrite:
        raise OutputError(
            "exists and holds a conversion of another checkpoint, or with another dtype; left as it is. Choose "
            "another folder, or pass --overwrite (overwrite=True) to replace it.",
            path=folder,
        )

    def written(step: Progress) -> None:
        report("converting", round(size * step.fraction))

    with warnings.catch_warnings():  # said in this checkpoint's outcome instead, where it is clear what they are about
        warnings.simplefilter("ignore")
        summary = convert_checkpoint(path, folder, dtype=dtype, overwrite=state != ABSENT, progress=written,
                                     license=card.license, base_model=card.base_model)  # fmt: skip
    try:
        checked = _checked(path, folder, dtype, lambda step: report("verifying", size))
    except BaseException:  # stopped while checking: a folder no check vouches for is not left to be skipped later
        shutil.rmtree(folder, ignore_errors=True)
        raise
    notes = "".join(f"\nwarning: {warning}" for warning in summary.warnings)
    return replace(checked, detail=checked.detail + notes) if notes else checked


def _weight_bytes(path: Path) -> int:
    try:
        return describe(path).weight_bytes
    except ConversionError:
        return 0  # reported when its turn comes


ABSENT, STALE, OTHER, FOREIGN = "absent", "stale", "other", "foreign"


def _folder_state(folder: Path, checkpoint: Path, dtype: str) -> str:
    """ABSENT; UP_TO_DATE; STALE (a conversion of this file's older state, with this dtype); OTHER (a converted
    folder of something else, or with another dtype); FOREIGN (not a converted folder)."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return ABSENT
    if not looks_converted(folder):
        return FOREIGN
    try:
        record = read_report(folder) or {}
    except ConversionError:  # unreadable: not a folder this checkpoint's conversion can claim
        return OTHER
    source = recorded_source(folder, record)
    if source is None or source.resolve() != checkpoint.resolve():
        return OTHER
    if (record.get("overrides") or {}).get("dtype", "auto") != dtype:
        return OTHER
    with MappedCheckpoint(checkpoint) as source:  # opened once, for the digest and the headers
        algorithm = recorded_algorithm(record)
        if algorithm not in KNOWN_ALGORITHMS:  # a digest this version cannot recompute
            return STALE
        if record.get("source_weights_digest") != weights_digest(source.source.state_dict, algorithm):
            return STALE
        recorded = {key: source.source.metadata.get(key) for key in TRAINING_KEYS}
        if record.get(TRAINING_FIELD) != recorded:  # what reverse writes back: an older folder lacks it
            return STALE
        return UP_TO_DATE if _headers_match(source, folder, dtype) else STALE


def _headers_match(source: MappedCheckpoint, folder: Path, dtype: str) -> bool:
    """Whether the folder still holds every tensor the checkpoint maps to, with its shape and dtype, from the
    headers alone (the report vouches for the weights' source; this, that nothing was removed or cut since)."""
    try:
        with ConvertedFolder(folder) as written:
            if source.names() != written.names():
                return False
            cast = None if dtype == "auto" else getattr(torch, dtype)
            return all(
                written.spec(name).shape == source.spec(name).shape
                and written.spec(name).dtype == (cast or source.spec(name).dtype)
                for name in source.names()
            )
    except ConversionError:
        return False


def _checked(checkpoint: Path, folder: Path, dtype: str, progress: OnProgress) -> EpochConversion:
    diff = diff_checkpoints(checkpoint, folder, progress=progress)
    problem = check_problem(diff, dtype)
    if problem:
        return EpochConversion(checkpoint, folder, FAILED, f"written, but its check failed: {problem}")
    kind = "bit-identical" if dtype == "auto" else f"within {dtype} rounding"
    return EpochConversion(checkpoint, folder, CONVERTED, f"checked: all {len(diff.changes)} tensors {kind}")


def check_problem(diff: CheckpointDiff, dtype: str) -> str:
    """What is wrong with a conversion whose diff against its checkpoint is ``diff``, or ``""``.

    With ``dtype="auto"`` every tensor must be bit-identical. With a cast, each value may move by the rounding to
    the new dtype: at most u·|a| (u = eps / 2, the unit roundoff) for a normal result, and at most half the
    smallest subnormal for one that underflows, so ‖B − A‖ ≤ u·‖A‖ + √n · smallest subnormal / 2. An overflow to
    infinity exceeds it.
    """
    for heading, names in (("missing", diff.only_in_a), ("unexpected", diff.only_in_b),
                           ("shape differs", list(diff.shape_differs))):  # fmt: skip
        if names:
            return f"{heading}: {', '.join(names[:5])}"
    worse = [c.key for c in diff.differs if not c.norm_diff <= _cast_bound(c, dtype)]
    allowed = "none may differ, the dtypes kept" if dtype == "auto" else f"beyond the {dtype} rounding"
    return f"{len(worse)} tensor(s) differ ({allowed}): {', '.join(worse[:5])}" if worse else ""


def _cast_bound(change, dtype: str) -> float:
    if dtype == "auto":
        return 0.0
    info = torch.finfo(getattr(torch, dtype))
    return info.eps / 2 * change.norm_a + math.sqrt(change.count) * info.smallest_normal * info.eps / 2

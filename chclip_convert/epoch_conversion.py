"""Convert the epochs you choose in one go: one progress for all, each folder checked against its checkpoint
afterwards, and a folder that still matches its checkpoint left as it is.

A folder *matches* when its ``conversion_report.json`` names this checkpoint file, records the digest of the
weights the checkpoint holds now (:mod:`chclip_convert.provenance`) and the same dtype option. A folder that
held an older state of the same file (``epoch_latest.pt`` is rewritten every epoch) is converted again; a
folder holding anything else is left alone and reported, unless ``overwrite`` is given for a converted one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .diff import CheckpointDiff, diff_checkpoints
from .errors import ConversionError, OutputError
from .preflight import REPORT_FILE, looks_converted

CONVERTED, UP_TO_DATE, FAILED = "converted", "up to date", "failed"


@dataclass(frozen=True)
class EpochConversion:
    """What happened to one checkpoint: its folder, the outcome, and the check or the error in words."""

    checkpoint: Path
    folder: Path
    outcome: str  # CONVERTED, UP_TO_DATE or FAILED
    detail: str

    def to_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "folder": str(self.folder), "outcome": self.outcome,
                "detail": self.detail}  # fmt: skip


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch is: the checkpoint at hand (1-based), what is done to it, and bytes over all."""

    index: int
    count: int
    checkpoint: Path
    phase: str  # "checking", "converting", "verifying" or "done"
    bytes_done: int
    bytes_total: int


def folder_for(checkpoint: str | Path, into: str | Path) -> Path:
    """``into/<stem>-hf``, named after the run too when cn_clip's layout shows it (``run-a-epoch3-hf``), from
    wherever the path was given (``epoch3.pt`` inside ``run-a/checkpoints/`` too)."""
    checkpoint = Path(os.path.abspath(Path(checkpoint).expanduser()))
    stem = checkpoint.stem
    if checkpoint.parent.name == "checkpoints" and checkpoint.parent.parent.name:
        stem = f"{checkpoint.parent.parent.name}-{stem}"
    return Path(into).expanduser() / f"{stem}-hf"


def convert_epochs(
    checkpoints: Sequence[str | Path],
    into: str | Path,
    *,
    dtype: str = "auto",
    overwrite: bool = False,
    progress: Callable[[BatchProgress], None] | None = None,
) -> list[EpochConversion]:
    """Convert each checkpoint into ``into/<name>-hf`` (see :func:`folder_for`), skipping folders that still
    match, and check each written folder with :func:`chclip_convert.diff.diff_checkpoints`.

    A problem with one checkpoint is reported in its :class:`EpochConversion` and the others go on; an
    exception raised by ``progress`` (a cancel button's) stops the batch, leaving no partial folder.
    """
    from .pipeline import WriteProgress, convert_checkpoint
    from .provenance import source_weights_digest
    from .training_run import describe

    paths = [Path(os.path.abspath(Path(p).expanduser())) for p in checkpoints]  # the folders record where from
    sizes = [_weight_bytes(path, describe) for path in paths]
    total, before = sum(sizes), 0
    results = []
    for index, (path, size) in enumerate(zip(paths, sizes, strict=True), 1):
        folder = folder_for(path, into)

        def report(phase: str, done: int, path=path, index=index, before=before) -> None:
            if progress is not None:
                progress(BatchProgress(index, len(paths), path, phase, before + done, total))

        def written(step: WriteProgress, size=size, report=report) -> None:
            report("converting", round(size * step.bytes_done / max(step.bytes_total, 1)))

        try:
            report("checking", 0)
            state = _folder_state(folder, path, dtype, source_weights_digest)
            if state == UP_TO_DATE:
                results.append(EpochConversion(path, folder, UP_TO_DATE, "still matches its checkpoint; left as it is"))
            elif state == "foreign":  # not a converted model: what it holds is the user's, overwrite or not
                raise OutputError(
                    "exists and is not a converted model (no config.json beside weights); left as it is. "
                    "Choose another folder, or move its files away.",
                    path=folder,
                )
            elif state == "other" and not overwrite:
                raise OutputError(
                    "exists and holds something other than a conversion of this checkpoint; left as it is. "
                    "Choose another folder, or pass --overwrite (overwrite=True) to replace a converted folder.",
                    path=folder,
                )
            else:
                convert_checkpoint(path, folder, dtype=dtype, overwrite=state != "absent", progress=written)
                report("verifying", size)
                results.append(_checked(path, folder, dtype))
        except ConversionError as error:
            results.append(EpochConversion(path, folder, FAILED, str(error)))
        report("done", size)  # up to date or failed too: the bytes over all reach the total
        before += size
    return results


def _weight_bytes(path: Path, describe) -> int:
    try:
        return describe(path).weight_bytes
    except ConversionError:
        return 0  # reported when its turn comes


def _folder_state(folder: Path, checkpoint: Path, dtype: str, digest_of) -> str:
    """ "absent", UP_TO_DATE, "stale" (a conversion of this file's older state), "other" (a converted folder of
    something else) or "foreign" (not a converted folder)."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return "absent"
    if not looks_converted(folder):
        return "foreign"
    try:
        record = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "other"
    source = record.get("source") if isinstance(record, dict) else None
    if not isinstance(source, str) or Path(source).resolve() != checkpoint.resolve():  # as given, maybe relative
        return "other"
    same_dtype = (record.get("overrides") or {}).get("dtype", "auto") == dtype
    same_weights = record.get("source_weights_digest") == digest_of(checkpoint)
    return UP_TO_DATE if same_dtype and same_weights else "stale"


def _checked(checkpoint: Path, folder: Path, dtype: str) -> EpochConversion:
    diff = diff_checkpoints(checkpoint, folder)
    problem = check_problem(diff, dtype)
    if problem:
        return EpochConversion(checkpoint, folder, FAILED, f"written, but its check failed: {problem}")
    kind = "bit-identical" if dtype == "auto" else f"within {dtype} rounding"
    return EpochConversion(checkpoint, folder, CONVERTED, f"checked: all {len(diff.changes)} tensors {kind}")


def check_problem(diff: CheckpointDiff, dtype: str) -> str:
    """What is wrong with a conversion whose diff against its checkpoint is ``diff``, or ``""``.

    With ``dtype="auto"`` every tensor must be bit-identical. With a cast, each tensor may differ by the
    rounding to the new dtype: at most half a unit in the last place of each value, so ‖B − A‖ / ‖A‖ is at most
    the dtype's unit roundoff (``eps / 2``); an overflow to infinity exceeds it.
    """
    for heading, names in (("missing", diff.only_in_a), ("unexpected", diff.only_in_b),
                           ("shape differs", list(diff.shape_differs))):  # fmt: skip
        if names:
            return f"{heading}: {', '.join(names[:5])}"
    bound = 0.0 if dtype == "auto" else torch.finfo(getattr(torch, dtype)).eps / 2
    worse = [c.key for c in diff.differs if not c.relative_change <= bound]
    return f"{len(worse)} tensor(s) differ beyond {bound:g}: {', '.join(worse[:5])}" if worse else ""

"""The command line's one progress bar: tqdm on stderr, fed with :class:`~chclip_convert.progress.Progress`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from chclip_convert.progress import Progress


class ProgressBar:
    """A tqdm bar that follows :class:`Progress` events: pass :meth:`update` as ``progress=``, then :meth:`close`.

    The first counted event opens the bar with its total and unit (bytes scaled to kB, MB, …); each moves it to
    ``done`` and describes it as :func:`describe` does. Nothing is drawn until then (a stage's start is not
    counted), so a task that fails before its first count leaves no empty bar behind.
    """

    def __init__(self, file: TextIO | None = None) -> None:
        self._file = file  # None: sys.stderr as it is when the bar opens (tests capture it)
        self._bar, self._described = None, ""

    def update(self, progress: Progress) -> None:
        """Move the bar to ``progress.done``, opening it on the first counted event, and anew when the unit changes
        (a task of two parts: ``export-onnx`` from a checkpoint writes weights in bytes, then counts its steps)."""
        from tqdm import tqdm  # here, not at import: the command line starts without it

        described = describe(progress)
        if not progress.counted:  # a stage begins: said once the bar is open; before, nothing to draw
            if self._bar is not None:
                self._bar.set_description(described)
            self._described = described
            return
        if self._bar is not None and self._bar.unit != progress.unit:
            self.close()
            self._bar = None
        if self._bar is None:
            self._bar = tqdm(
                total=progress.total, unit=progress.unit, unit_scale=progress.unit == "B", desc=described,
                file=self._file or sys.stderr,
            )  # fmt: skip
        elif described != self._described:
            self._bar.set_description(described, refresh=False)
        self._described = described
        self._bar.update(progress.done - self._bar.n)

    def close(self) -> None:
        """Close the bar, if an event opened it."""
        if self._bar is not None:
            self._bar.close()


def describe(progress: Progress) -> str:
    """The stage (``"writing weights"``); in a batch, led by the item's place and name: ``2/3 epoch3.pt converting``."""
    if not progress.item:
        return progress.stage
    return f"{progress.index}/{progress.count} {Path(progress.item).name} {progress.stage}"

"""One progress event for every long task: what the library reports, and what the bars and widgets show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

WRITING = "writing weights"  # the stage of the safetensors writer's events, which the widgets count in bytes


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` (in ``unit``: ``"B"`` for bytes, ``"tensors"``), while doing ``stage``.

    ``stage`` says in words what is being done (``"writing weights"``, ``"comparing tensors"``). ``index`` of
    ``count`` says how far a second count is (1-based): the tensors written, while bytes are written; the
    checkpoint at hand, in a batch, where ``item`` names it (its path). An event without a unit
    (:meth:`starting`) only says that a stage begins, before anything can be counted.
    """

    done: int
    total: int
    unit: str = "tensors"
    stage: str = ""
    item: str = ""
    index: int = 1
    count: int = 1

    @classmethod
    def starting(cls, stage: str) -> Progress:
        """The event that says ``stage`` begins, with nothing counted yet (its :attr:`fraction` is 0)."""
        return cls(0, 0, unit="", stage=stage)

    @property
    def counted(self) -> bool:
        """Whether the event counts something (``done`` of ``total``), rather than only naming a stage."""
        return bool(self.unit)

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1]; 1 when there is nothing to do, 0 for a stage that only begins."""
        if not self.counted:
            return 0.0
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0


OnProgress = Callable[[Progress], None]

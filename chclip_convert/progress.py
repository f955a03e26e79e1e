"""One progress event for every long task: what the library reports, and what the bars and widgets show."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` (in ``unit``: ``"B"`` for bytes, ``"tensors"``), while doing ``stage``.

    ``stage`` says in words what is being done (``"writing weights"``, ``"comparing tensors"``). ``index`` of
    ``count`` says how far a second count is (1-based): the tensors written, while bytes are written; the
    checkpoint at hand, in a batch, where ``item`` names it (its path).
    """

    done: int
    total: int
    unit: str = "tensors"
    stage: str = ""
    item: str = ""
    index: int = 1
    count: int = 1

    @property
    def fraction(self) -> float:
        """``done / total`` in [0, 1]; 1 when there is nothing to do."""
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0


OnProgress = Callable[[Progress], None]

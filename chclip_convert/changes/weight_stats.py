"""Per-tensor statistics of the source weights, as the table maps them, beside a converted folder's — and
what a conversion can get wrong: the largest difference and the ratio of the norms.

Streamed: the checkpoint is memory-mapped and read tensor by tensor through the mapping steps (a fused q/k/v
weight once, then split), the folder's safetensors one tensor at a time, so at most one source tensor's pieces
and one converted tensor are held at once, and each statistic is taken over float64 chunks of bounded size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.changes.diff import one_thread, part_of
from chclip_convert.conversion.state_dict import Step, implied_tensors, table_steps
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.files.folder import FolderTensors
from chclip_convert.mapping.table import split_layer_index
from chclip_convert.verification.weight_check import EQUAL, compare_state

STATS = ("mean", "std", "absmax", "norm")
CHUNK = 1 << 22  # elements per float64 pass (32 MiB): what a statistic adds to memory, whatever the tensor's size
BOTH, SOURCE_ONLY, CONVERTED_ONLY, SHAPE_DIFFERS = "both", "source only", "converted only", "shape differs"


@dataclass(frozen=True)
class TensorComparison:
    """One target tensor as the source implies it and as a converted folder holds it."""

    target: str
    source: str  # the source key the table maps here; "" if none does
    op: str
    tower: str  # "vision", "text" or "shared"
    layer: int | None
    source_stats: dict[str, float] | None  # None: the table puts nothing here (or its op cannot apply)
    converted_stats: dict[str, float] | None  # None: the folder lacks this tensor
    max_abs_diff: float | None  # max |converted − source|; None unless both sides exist with one shape
    norm_ratio: float | None  # ‖converted‖ / ‖source‖; None unless both sides exist with one shape
    status: str  # "equal" or the kind of difference (see chclip_convert.verification.weight_check)

    @property
    def agrees(self) -> bool:
        return self.status == EQUAL

    @property
    def kind(self) -> str:
        """Which sides hold the tensor: both (same shape), source only, converted only, or shape differs."""
        if self.converted_stats is None:
            return SOURCE_ONLY
        if self.source_stats is None:
            return SHAPE_DIFFERS if self.source else CONVERTED_ONLY  # with a source: its op cannot apply
        return BOTH if self.max_abs_diff is not None else SHAPE_DIFFERS

    @property
    def parameter(self) -> str:
        """The name within its layer (``self_attn.q_proj.weight``), or the whole name outside layers."""
        return self.target if self.layer is None else self.target.split(f".{self.layer}.", 1)[1]


def compare_weights(checkpoint: str | Path, folder: str | Path) -> list[TensorComparison]:
    """Every target tensor of the table's mapping of ``checkpoint`` and of ``folder``, sorted by name: the
    statistics of both sides (after the op, so a q slice is compared with q_proj), their largest difference
    and norm ratio, and the status :func:`chclip_convert.verification.weight_check.compare_state` gives it.

    The checkpoint need not convert: every key the table knows is mapped, shapes unchecked, so a damaged
    checkpoint or folder shows each tensor that differs. Memory stays at a few tensors (see the module)."""
    source = load_checkpoint(checkpoint)
    with FolderTensors(folder) as converted, one_thread():
        found = [
            compare_tensor(target, step, piece, converted.read(target) if target in converted else None)
            for target, step, piece in implied_tensors(table_steps(source.state_dict), source.read)
        ]
        implied = {c.target for c in found}
        extra = [key for key in converted.names() if key not in implied]
        found += [compare_tensor(key, None, None, converted.read(key)) for key in extra]
    return sorted(found, key=lambda c: c.target)


def compare_tensor(
    target: str, step: Step | None, expected: torch.Tensor | None, written: torch.Tensor | None
) -> TensorComparison:
    """One target: ``expected`` the values the table derives through ``step`` (``None`` with no step, or where
    its op cannot apply), ``written`` the folder's tensor (``None`` if it has none)."""
    status = compare_state({target: expected} if step else {}, {} if written is None else {target: written})
    same_shape = expected is not None and written is not None and expected.shape == written.shape
    if same_shape and status.ok:  # the same bytes: the same statistics, no difference, measured once
        source_stats = converted_stats = tensor_stats(expected)
        difference, ratio = 0.0, 1.0
    elif same_shape:
        source_stats, converted_stats, difference = _measure_pair(expected, written)
        ratio = _ratio(converted_stats["norm"], source_stats["norm"])
    else:
        source_stats = tensor_stats(expected) if expected is not None else None
        converted_stats = tensor_stats(written) if written is not None else None
        difference = ratio = None
    return TensorComparison(
        target=target,
        source=step.inputs[0] if step else "",
        op=step.op.name if step else "",
        tower=part_of(target).tower,
        layer=split_layer_index(target)[1],
        source_stats=source_stats,
        converted_stats=converted_stats,
        max_abs_diff=difference,
        norm_ratio=ratio,
        status=status.status(target),
    )


def tensor_stats(tensor: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation (population), largest magnitude and L2 norm, computed in float64 chunks."""
    sums = _Sums()
    for chunk in _chunks(tensor):
        sums.add(chunk, chunk.to(torch.float64))
    return sums.stats()


def _measure_pair(source: torch.Tensor, converted: torch.Tensor) -> tuple[dict, dict, float]:
    """Both sides' statistics and max |converted − source|, in one pass over matching float64 chunks."""
    first, second, difference = _Sums(), _Sums(), 0.0
    for a, b in zip(_chunks(source), _chunks(converted), strict=True):
        a64, b64 = a.to(torch.float64), b.to(torch.float64)
        first.add(a, a64)
        second.add(b, b64)
        difference = max(difference, (b64 - a64).abs_().max().item())
    return first.stats(), second.stats(), difference


class _Sums:
    """Running count, sum, sum of squares and largest magnitude over float64 chunks."""

    def __init__(self) -> None:
        self.count, self.total, self.squares, self.absmax = 0, 0.0, 0.0, 0.0

    def add(self, chunk: torch.Tensor, values: torch.Tensor) -> None:
        """``values``: ``chunk`` in float64 (the extremes are read off ``chunk`` itself, exactly and faster)."""
        if values.numel():
            low, high = torch.aminmax(chunk)
            self.count += values.numel()
            self.total += values.sum().item()
            self.squares += torch.dot(values, values).item()
            extremes = (self.absmax, -low.item(), high.item())
            self.absmax = math.nan if any(map(math.isnan, extremes)) else max(extremes)  # NaN shows, not hides

    def stats(self) -> dict[str, float]:
        if not self.count:
            return {"mean": math.nan, "std": math.nan, "absmax": 0.0, "norm": 0.0}
        mean = self.total / self.count
        # E[x²] − mean² in float64: the cancellation costs ~1e-16·mean²/var relative, far below what is shown
        variance = max(self.squares / self.count - mean * mean, 0.0) if self.count > 1 else 0.0
        return {"mean": mean, "std": math.sqrt(variance), "absmax": self.absmax, "norm": math.sqrt(self.squares)}


def _chunks(tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tensor.detach().reshape(-1).split(CHUNK)


def _ratio(converted: float, source: float) -> float:
    if source == 0.0:
        return 1.0 if converted == 0.0 else math.inf
    return converted / source

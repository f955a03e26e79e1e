"""Per-tensor statistics of the source weights, as the table maps them, beside a converted folder's."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .comparison import EQUAL, compare_state
from .convert import implied_targets
from .mapping import split_layer_index


@dataclass(frozen=True)
class TensorComparison:
    """Statistics of one target tensor as the source implies it and as a converted folder holds it."""

    target: str
    source: str
    op: str
    tower: str  # "vision", "text" or "shared"
    layer: int | None
    source_stats: dict[str, float] | None
    converted_stats: dict[str, float] | None
    status: str = ""  # "equal" or the kind of difference (see chclip_convert.comparison); "" if not compared

    @property
    def agrees(self) -> bool:
        if self.status:
            return self.status == EQUAL
        if self.source_stats is None or self.converted_stats is None:
            return False
        return all(
            abs(self.source_stats[k] - self.converted_stats[k]) <= 1e-6 * max(1.0, abs(self.source_stats[k]))
            for k in self.source_stats
        )


STATS = ("mean", "std", "absmax", "norm")


def tensor_stats(tensor: torch.Tensor) -> dict[str, float]:
    """Mean, standard deviation, largest magnitude and L2 norm, computed in float64."""
    values = tensor.detach().to(torch.float64).reshape(-1)
    return {
        "mean": values.mean().item(),
        "std": values.std(unbiased=False).item() if values.numel() > 1 else 0.0,
        "absmax": values.abs().max().item(),
        "norm": values.norm().item(),
    }


def compare_weights(
    source_state: dict[str, torch.Tensor], converted_state: dict[str, torch.Tensor]
) -> list[TensorComparison]:
    """For every target tensor: the statistics of the source slice the table maps to it (after the op,
    so a q slice is compared with q_proj) and of the converted tensor; ``None`` where one side lacks it.
    ``status`` and ``agrees`` come from :func:`chclip_convert.comparison.compare_state`."""
    implied = implied_targets(source_state)
    compared = compare_state({target: piece for target, (_, _, piece) in implied.items()}, converted_state)
    comparisons = []
    for target in sorted(set(implied) | set(converted_state)):
        source, op, piece = implied.get(target, ("", "", None))
        converted = converted_state.get(target)
        if piece is not None and converted is not None and piece.shape != converted.shape:
            piece_stats = None
        else:
            piece_stats = tensor_stats(piece) if piece is not None else None
        comparisons.append(
            TensorComparison(
                target=target,
                source=source,
                op=op,
                tower=_tower(target),
                layer=split_layer_index(target)[1],
                source_stats=piece_stats,
                converted_stats=tensor_stats(converted) if converted is not None else None,
                status=compared.status(target),
            )
        )
    return comparisons


def _tower(target: str) -> str:
    if target.startswith(("vision_model.", "visual_projection")):
        return "vision"
    if target.startswith(("text_model.", "text_projection")):
        return "text"
    return "shared"

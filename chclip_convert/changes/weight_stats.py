"""Per-tensor statistics of the source weights, as the table maps them, beside a converted folder's — and
what a conversion can get wrong: the largest difference and the ratio of the norms.

Both sides are read through :mod:`chclip_convert.conversion.views`, streamed, so at most one source tensor's
pieces and one converted tensor are held at once; each statistic is taken by :mod:`chclip_convert.tensor_stats`,
whose statuses :attr:`TensorComparison.kind` uses, A the source and B the converted folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.conversion.state_dict import Step
from chclip_convert.conversion.views import ConvertedFolder, MappedCheckpoint
from chclip_convert.mapping.parts import tower_of
from chclip_convert.mapping.table import split_layer_index
from chclip_convert.tensor_stats import EQUAL, one_thread, pair_stats, status_text, tensor_stats
from chclip_convert.verification.weight_check import STATUS_OF, compare_state

SIDES = ("source", "converted")  # what A and B are here, in words


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
    status: str  # "equal" or verify's word for the difference (see chclip_convert.verification.weight_check)

    @property
    def agrees(self) -> bool:
        return self.status == EQUAL

    @property
    def kind(self) -> str:
        """How the two sides hold the tensor, bit for bit, in :mod:`chclip_convert.tensor_stats`' vocabulary:
        ``EQUAL``, ``DIFFERS`` (dtype or values), ``SHAPE_DIFFERS``, ``ONLY_IN_A`` (the source only) or
        ``ONLY_IN_B`` (the folder only)."""
        return STATUS_OF[self.status]

    @property
    def kind_text(self) -> str:
        """The kind in words, the sides named: ``only in converted``, ``shape differs``."""
        return status_text(self.kind, *SIDES)

    @property
    def parameter(self) -> str:
        """The name within its layer (``self_attn.q_proj.weight``), or the whole name outside layers."""
        return self.target if self.layer is None else self.target.split(f".{self.layer}.", 1)[1]


def compare_weights(checkpoint: str | Path, folder: str | Path) -> list[TensorComparison]:
    """Every target tensor of the table's mapping of ``checkpoint`` and of ``folder``, sorted by name: the
    statistics of both sides (after the op, so a q slice is compared with q_proj), their largest difference
    and norm ratio, and the status :func:`chclip_convert.verification.weight_check.compare_state` gives it.

    The checkpoint need not convert: every key the table knows is mapped, shapes unchecked, so a damaged
    checkpoint or folder shows each tensor that differs. What the views set apart (BERT's pooler, the folder's
    rebuilt position-id buffers) is left out. Memory stays at a few tensors (see the module)."""
    with MappedCheckpoint(checkpoint) as source, ConvertedFolder(folder) as converted, one_thread():
        held = set(converted.names())
        found = [
            compare_tensor(target, step, piece, converted.read(target) if target in held else None)
            for target, step, piece in source.mapped()
        ]
        extra = held - {c.target for c in found}
        found += [compare_tensor(key, None, None, converted.read(key)) for key in sorted(extra)]
    return sorted(found, key=lambda c: c.target)


def compare_tensor(
    target: str, step: Step | None, expected: torch.Tensor | None, written: torch.Tensor | None
) -> TensorComparison:
    """One target: ``expected`` the values the table derives through ``step`` (``None`` with no step, or where
    its op cannot apply), ``written`` the folder's tensor (``None`` if it has none)."""
    status = compare_state({target: expected} if step else {}, {} if written is None else {target: written})
    if expected is not None and written is not None and expected.shape == written.shape:
        pair = pair_stats(expected, written, sides=True)  # bit-identical sides: measured once
        source_stats, converted_stats = pair.a.to_dict(), pair.b.to_dict()
        difference, ratio = pair.max_abs, pair.norm_ratio
    else:
        source_stats = tensor_stats(expected).to_dict() if expected is not None else None
        converted_stats = tensor_stats(written).to_dict() if written is not None else None
        difference = ratio = None
    return TensorComparison(
        target=target,
        source=step.inputs[0] if step else "",
        op=step.op.name if step else "",
        tower=tower_of(target),
        layer=split_layer_index(target)[1],
        source_stats=source_stats,
        converted_stats=converted_stats,
        max_abs_diff=difference,
        norm_ratio=ratio,
        status=status.status(target),
    )

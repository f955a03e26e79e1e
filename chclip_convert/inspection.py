"""Looking inside a conversion without writing anything: the key report (even when it fails) and
per-tensor statistics of source and converted weights."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .comparison import EQUAL, compare_state
from .convert import apply_steps, convert_state_dict, table_steps
from .errors import MappingError
from .mapping import split_layer_index
from .report import FIXES, PROBLEM_STATUSES, ConversionReport

STATUS_COLOURS = {
    "mapped": "#e8f5e9",
    "transformed": "#e3f2fd",
    "filled": "#f1f8e9",
    "ignored": "#eeeeee",
    "unused": "#fff3e0",
    "missing": "#ffebee",
    "shape_mismatch": "#fce4ec",
    "conflict": "#fce4ec",
}


def inspect_checkpoint(checkpoint: str | Path, **options) -> ConversionReport:
    """The full key report for ``checkpoint``, also when the conversion would stop on problems.

    ``options`` are passed to :func:`convert_state_dict` (``config``, ``vision_heads``, ...).
    """
    source = load_checkpoint(checkpoint)
    try:
        return convert_state_dict(source.state_dict, path=source.path, **options).report
    except MappingError as error:
        return error.report


def filter_rows(rows: list[dict], *, status: str = "all", text: str = "") -> list[dict]:
    """Rows whose status is ``status`` (or any, for ``"all"``/``"problems"``) and whose key or
    counterpart contains ``text``."""
    problem = set(PROBLEM_STATUSES)
    needle = text.strip().lower()
    return [
        row
        for row in rows
        if (status == "all" or row["status"] == status or (status == "problems" and row["status"] in problem))
        and (not needle or needle in row["key"].lower() or needle in row["counterpart"].lower())
    ]


def rows_to_html(rows: list[dict], *, limit: int = 400) -> str:
    """An HTML table of report rows, coloured by status, with how to fix each kind of problem."""
    header = "".join(f"<th>{name}</th>" for name in ("side", "key", "status", "shape", "dtype", "counterpart", "note"))
    body = []
    for row in rows[:limit]:
        note = row["reason"] or FIXES.get(row["status"], "")
        cells = [row["side"], row["key"], row["status"], _shape(row["shape"]), row["dtype"], row["counterpart"], note]
        colour = STATUS_COLOURS.get(row["status"], "white")
        tds = "".join(f"<td>{html.escape(str(cell if cell is not None else ''))}</td>" for cell in cells)
        body.append(f'<tr style="background:{colour}">{tds}</tr>')
    more = f"<p>… {len(rows) - limit} more rows</p>" if len(rows) > limit else ""
    return (
        '<table style="font-family:monospace;font-size:11px;border-collapse:collapse">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"
    )


def _shape(shape: list[int] | None) -> str:
    if shape is None:
        return "-"
    return "×".join(map(str, shape)) or "scalar"


def rows_to_text(rows: list[dict]) -> str:
    """The same rows as aligned plain text (for printing and for comparing notebook outputs)."""
    lines = [f"{'side':6} {'status':14} {'shape':16} {'dtype':8} key  ←→ counterpart"]
    for row in rows:
        shape = "x".join(map(str, row["shape"])) if row["shape"] is not None else "-"
        lines.append(
            f"{row['side']:6} {row['status']:14} {shape or 'scalar':16} {row['dtype'] or '-':8} "
            f"{row['key']}  ←→ {row['counterpart'] or '-'}"
        )
    return "\n".join(lines)


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


def implied_targets(source_state: dict[str, torch.Tensor]) -> dict[str, tuple[str, str, torch.Tensor | None]]:
    """Target name → (source key, op name, the values the table puts there: a q/k/v slice, a transposed
    matrix, ...); the values are ``None`` where the op cannot apply (a fused tensor of the wrong size)."""
    implied: dict[str, tuple[str, str, torch.Tensor | None]] = {}
    for step in table_steps(source_state):
        try:
            pieces = [(target, piece) for target, piece, _ in apply_steps([step], source_state.__getitem__)]
        except ValueError:
            pieces = [(target, None) for target in step.targets]
        implied.update((target, (step.source, step.op.name, piece)) for target, piece in pieces)
    return implied


def _tower(target: str) -> str:
    if target.startswith(("vision_model.", "visual_projection")):
        return "vision"
    if target.startswith(("text_model.", "text_projection")):
        return "text"
    return "shared"

"""ipywidgets front ends. Each UI is a small class in fixed sections — widgets, connections, handlers
(``_on_<widget>_<event>``), layout (``.widget``) — and only a view: the work is done by the same
functions the command line uses. Results go into widget state (``.value``), so a notebook saved after
running shows them, and tests drive the UI by setting values and clicking, without a browser.
"""

from __future__ import annotations

import html
import io

import ipywidgets as W
import torch

from ..constants import (
    CONFLICT,
    FILLED,
    IGNORED,
    MAPPED,
    MISSING,
    SHAPE_MISMATCH,
    STATUS_FILTERS,
    TRANSFORMED,
    UNEXPECTED,
    UNUSED,
)
from ..convert import implied_targets
from ..inspection import filter_rows
from ..report import FIXES, ConversionReport
from ..weight_stats import TensorComparison

WIDE = W.Layout(width="640px")
DESCRIPTION = {"description_width": "110px"}


STATUS_COLOURS = {
    MAPPED: "#e8f5e9",
    TRANSFORMED: "#e3f2fd",
    FILLED: "#f1f8e9",
    IGNORED: "#eeeeee",
    UNUSED: "#fff3e0",
    MISSING: "#ffebee",
    SHAPE_MISMATCH: "#fce4ec",
    CONFLICT: "#fce4ec",
    UNEXPECTED: "#fff3e0",
}


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


class KeyInspectorUI:
    """Every source and target key with its status, filterable by status and by name."""

    def __init__(self, report: ConversionReport) -> None:
        # widgets
        self.report = report
        self.status_filter = W.Dropdown(options=STATUS_FILTERS, value="all", description="status")
        self.name_filter = W.Text("", description="name", placeholder="part of a key, e.g. resblocks.1")
        self.count = W.HTML()
        self.table = W.HTML()
        # connections
        self.status_filter.observe(self._on_filter_change, names="value")
        self.name_filter.observe(self._on_filter_change, names="value")
        self._on_filter_change()

    def rows(self) -> list[dict]:
        return filter_rows(self.report.rows(), status=self.status_filter.value, text=self.name_filter.value)

    # handlers
    def _on_filter_change(self, change=None) -> None:
        rows = self.rows()
        self.count.value = (
            f"<b>{len(rows)}</b> of {len(self.report.rows())} keys — {html.escape(self.report.summary())}"
        )
        self.table.value = rows_to_html(rows)

    # layout
    @property
    def widget(self) -> W.VBox:
        return W.VBox([W.HBox([self.status_filter, self.name_filter]), self.count, self.table])


class HistogramUI:
    """Pick one target tensor; see its values, source and converted, as overlaid histograms."""

    def __init__(
        self,
        source_state: dict[str, torch.Tensor],
        converted_state: dict[str, torch.Tensor],
        comparisons: list[TensorComparison],
        *,
        initial: str | None = None,
    ) -> None:
        # widgets
        self.implied, self.converted_state = implied_targets(source_state), converted_state
        names = [c.target for c in comparisons]
        flagged = [c.target for c in comparisons if not c.agrees]
        self.tensor = W.Dropdown(
            options=names,
            value=initial or (flagged[0] if flagged else names[0]),
            description="tensor",
            layout=WIDE,
        )
        self.image = W.Image(format="png")
        self.caption = W.HTML()
        # connections
        self.tensor.observe(self._on_tensor_change, names="value")
        self._on_tensor_change()

    # handlers
    def _on_tensor_change(self, change=None) -> None:
        from matplotlib.figure import Figure

        from .plots import plot_histogram

        name = self.tensor.value
        source = self.implied.get(name, ("", "", None))[2]
        converted = self.converted_state.get(name)
        figure = Figure(figsize=(6, 3), dpi=90)
        plot_histogram(figure.subplots(), source, converted, name)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        self.image.value = buffer.getvalue()
        same = source is not None and converted is not None and source.shape == converted.shape
        equal = same and torch.equal(source.to(converted.dtype), converted)
        self.caption.value = f"<code>{html.escape(name)}</code>: " + (
            "identical values" if equal else "<b style='color:#b71c1c'>values differ or one side is missing</b>"
        )

    # layout
    @property
    def widget(self) -> W.VBox:
        return W.VBox([self.tensor, self.caption, self.image])

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

from ..convert import implied_targets
from ..weight_stats import TensorComparison
from .key_grid import COLUMNS, STATUS_COLOURS, KeyInspectorUI, row_cells

WIDE = W.Layout(width="640px")
DESCRIPTION = {"description_width": "110px"}

__all__ = ["HistogramUI", "KeyInspectorUI", "rows_to_html"]


def rows_to_html(rows: list[dict], *, limit: int = 400) -> str:
    """A static HTML table of report rows, coloured by status (the README's picture; notebooks use the grid)."""
    header = "".join(f"<th>{name}</th>" for name in COLUMNS)
    body = []
    for row in rows[:limit]:
        tds = "".join(f"<td>{html.escape(cell)}</td>" for cell in row_cells(row))
        body.append(f'<tr style="background:{STATUS_COLOURS.get(row["status"], "white")}">{tds}</tr>')
    more = f"<p>… {len(rows) - limit} more rows</p>" if len(rows) > limit else ""
    return (
        '<table style="font-family:monospace;font-size:11px;border-collapse:collapse">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"
    )


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

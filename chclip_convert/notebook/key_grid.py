"""The key inspector: every source and target key of a conversion report in a data grid (itables' DataTables
widget), filtered by status and by name (:func:`chclip_convert.conversion.inspection.filter_rows`), sorted by a
click on a column header (the sort kept when a filter changes), scrolled inside a fixed height, coloured by status
and exported to CSV as filtered."""

from __future__ import annotations

import html

import ipywidgets as W
import pandas as pd

from chclip_convert.conversion.inspection import NameFilterError, filter_rows, shape_text
from chclip_convert.mapping.report import FIXES, ConversionReport
from chclip_convert.names import (
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
from chclip_convert.notebook.data_grid import DataGrid
from chclip_convert.notebook.data_grid import grid_options as shared_grid_options
from chclip_convert.notebook.elements import Panel, in_widget_terms, nothing_found

COLUMNS = ("side", "key", "status", "shape", "dtype", "counterpart", "note")
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
CSV_NAME = "chclip-keys"  # the export downloads as chclip-keys.csv


def row_cells(row: dict) -> list[str]:
    """One report row as the text of the grid's :data:`COLUMNS`; a problem without a reason notes its fix (in the
    widgets' terms)."""
    note = row["reason"] or in_widget_terms(FIXES.get(row["status"], ""))
    return [row["side"], row["key"], row["status"], shape_text(row["shape"]), row["dtype"], row["counterpart"], note]


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    """The grid's table: one row of text cells per report row."""
    return pd.DataFrame([row_cells(row) for row in rows], columns=list(COLUMNS), dtype=str)


def grid_options() -> dict:
    """The shared grid's options (:func:`.data_grid.grid_options`) for the key report's columns; the names and
    the note wrap."""
    return shared_grid_options(
        colours=STATUS_COLOURS,
        status_column=COLUMNS.index("status"),
        csv_name=CSV_NAME,
        names=[COLUMNS.index("key"), COLUMNS.index("counterpart")],
        texts=[COLUMNS.index("note")],
    )


class KeyInspectorUI:
    """Every source and target key with its status, in a sortable grid filtered by status and by name."""

    def __init__(self, report: ConversionReport) -> None:
        # widgets
        self.report, self.all_rows = report, report.rows()  # the report is fixed: its rows are made once
        self.status_filter = W.Dropdown(options=STATUS_FILTERS, value="all", description="status")
        self.name_filter = W.Text("", description="name", placeholder="part of a key, e.g. resblocks.1")
        self.regex = W.Checkbox(False, description="regex", indent=False, layout=W.Layout(width="80px"))
        self.count = W.HTML()
        self.grid = DataGrid(rows_frame([]), **grid_options())
        # connections
        for control in (self.status_filter, self.name_filter, self.regex):
            control.observe(self._on_filter_change, names="value")
        self._on_filter_change()

    def rows(self) -> list[dict]:
        """The rows the filters show (none while the name filter is a regular expression that does not compile)."""
        return self._filtered()[0]

    def _filtered(self) -> tuple[list[dict], str]:
        try:
            rows = filter_rows(
                self.all_rows, status=self.status_filter.value, text=self.name_filter.value, regex=self.regex.value
            )
        except NameFilterError as error:
            return [], str(error)
        return rows, ""

    # handlers
    def _on_filter_change(self, change=None) -> None:
        rows, problem = self._filtered()
        total = len(self.all_rows)
        if problem:
            self.count.value = f"<span style='color:#b71c1c'>name: {html.escape(problem)}</span>"
        elif not rows:
            self.count.value = f"{nothing_found('key', self.name_filter.value, total)} — {self._summary()}"
        else:
            self.count.value = f"<b>{len(rows)}</b> of {total} keys — {self._summary()}"
        self.grid.update(rows_frame(rows), **grid_options())  # update() resets options it is not given

    def _summary(self) -> str:
        return html.escape(in_widget_terms(self.report.summary()))

    # layout
    @property
    def widget(self) -> W.VBox:
        box = Panel(
            [W.HBox([self.status_filter, self.name_filter, self.regex]), self.count, self.grid], name="The keys"
        )
        box.add_class("chclip-key-inspector")  # the handle pages and browser tests find the inspector by
        return box

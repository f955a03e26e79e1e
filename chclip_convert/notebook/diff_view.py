"""Compare two checkpoints in the notebook: pick A and B (each an original checkpoint or a converted folder),
click *Compare*, and see a one-line verdict, every tensor in a data grid (status, tower, layer, relative change,
largest difference, cosine; sorted by a header click, filtered, exported to CSV) and the relative change per
layer of each tower (:mod:`.plotting.diffs`). The work is :func:`chclip_convert.changes.diff.diff_checkpoints`, as
``chclip-convert diff A B`` does it.

The comparison runs in the kernel, which is busy until it is done (the demo takes a second; a ViT-H pair, a
few minutes): the progress bar moves meanwhile, and the inputs are disabled. A result belongs to the inputs it
came from: changing either clears it.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as W
import pandas as pd
from itables import JavascriptFunction

from chclip_convert.changes.diff import CheckpointDiff, diff_checkpoints
from chclip_convert.conversion.inspection import key_names, name_filter, shape_text
from chclip_convert.mapping.parts import LAYER, part_of
from chclip_convert.notebook.converter import failure_text, message_html
from chclip_convert.notebook.data_grid import DataGrid, grid_options
from chclip_convert.notebook.elements import Panel, nothing_found
from chclip_convert.notebook.picker import PathPicker, standard_places
from chclip_convert.notebook.plotting.diffs import draw_diff
from chclip_convert.notebook.plotting.figures import DIFF_SIZE, figure_widget, is_interactive, new_figure
from chclip_convert.progress import Progress
from chclip_convert.tensor_stats import DIFFERS, EQUAL, ONLY_IN_A, ONLY_IN_B, SHAPE_DIFFERS

if TYPE_CHECKING:
    from chclip_convert.notebook.session import Session
    from chclip_convert.notebook.workspace import Workspace

STATUSES = (DIFFERS, EQUAL, ONLY_IN_A, ONLY_IN_B, SHAPE_DIFFERS)  # the one vocabulary, in the filter's order
NOT_EQUAL = "not equal"
FILTERS = ("all", NOT_EQUAL, *STATUSES)
COLUMNS = ("key", "status", "tower", "layer", "relative change", "max |B−A|", "cosine", "note")
NUMERIC = ("relative change", "max |B−A|", "cosine")
STATUS_COLOURS = {
    EQUAL: "#e8f5e9",  # as a mapped key: nothing to look at
    DIFFERS: "#e3f2fd",  # as a transformed key: changed, which may be meant
    ONLY_IN_A: "#fff3e0",
    ONLY_IN_B: "#fff3e0",
    SHAPE_DIFFERS: "#fce4ec",
}
CSV_NAME = "chclip-diff"  # the export downloads as chclip-diff.csv
SOURCE_HINT = "an original checkpoint (.pt) or a converted folder"
NARROW = {"description_width": "70px"}
PROGRESS_STEPS = 100  # the bar is redrawn at most this often a comparison
# The layer column holds a number or a section's name; sorted, numbers go first in numeric order.
_LAYER_SORT = "function (data, type) { return type === 'sort' && /^\\d+$/.test(data) ? data.padStart(6, '0') : data; }"


def diff_rows(diff: CheckpointDiff) -> list[dict]:
    """One row per tensor name of either side, in tower → section → layer order, then by name."""
    rows = [_row(change.key, change.status, change) for change in diff.changes]
    rows += [_row(key, ONLY_IN_A) for key in diff.only_in_a]
    rows += [_row(key, ONLY_IN_B) for key in diff.only_in_b]
    for key, (shape_a, shape_b) in diff.shape_differs.items():
        rows.append(_row(key, SHAPE_DIFFERS, note=f"A {shape_text(shape_a)}, B {shape_text(shape_b)}"))
    return sorted(rows, key=lambda row: (part_of(row["key"]).sort_key(), row["key"]))


def _row(key: str, status: str, change=None, note: str = "") -> dict:
    part = part_of(key)
    return {
        "key": key,
        "status": status,
        "tower": part.tower,
        "layer": str(part.layer) if part.section == LAYER else part.label,
        "relative change": None if change is None else change.relative_change,
        "max |B−A|": None if change is None else change.max_abs,
        "cosine": None if change is None else change.cosine,
        "note": note,
    }


def filter_diff_rows(rows: list[dict], *, status: str = "all", text: str = "") -> list[dict]:
    """Rows of ``status`` (any, for ``"all"``; all but the equal ones, for ``"not equal"``) whose key matches
    ``text`` (:func:`chclip_convert.conversion.inspection.name_filter`: words, a number at an end matches whole
    numbers), under the key's own naming or the other one (original or transformers, by the mapping table)."""
    wanted = {"all": STATUSES, NOT_EQUAL: tuple(s for s in STATUSES if s != EQUAL)}.get(status, (status,))
    found = name_filter(text).filter(rows, lambda row: key_names(row["key"]))
    return [row for row in found if row["status"] in wanted]


def number_text(value: float | None, column: str) -> str:
    """A number as the grid shows it: three significant digits (the cosine, six decimals), ``0`` for exactly
    zero, empty for none; ``Infinity`` and ``NaN`` as JavaScript reads them, so the column still sorts."""
    if value is None:
        return ""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if column == "cosine":
        return f"{value:.6f}"
    return "0" if value == 0 else f"{value:.2e}"


def row_cells(row: dict) -> list[str]:
    return [number_text(row[column], column) if column in NUMERIC else row[column] for column in COLUMNS]


def rows_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row_cells(row) for row in rows], columns=list(COLUMNS), dtype=str)


def diff_grid_options() -> dict:
    """The shared grid (:func:`.data_grid.grid_options`); the number columns sort as numbers (empty first),
    the layer column numbers first; the key and the note wrap."""
    numeric = [COLUMNS.index(column) for column in NUMERIC]
    column_defs = [
        {"targets": numeric, "type": "num", "className": "dt-right"},
        {"targets": COLUMNS.index("layer"), "render": JavascriptFunction(_LAYER_SORT)},
    ]
    return grid_options(
        colours=STATUS_COLOURS,
        status_column=COLUMNS.index("status"),
        csv_name=CSV_NAME,
        column_defs=column_defs,
        names=[COLUMNS.index("key")],
        texts=[COLUMNS.index("note")],
    )


def suggested_b(session: Session) -> Path | str:
    """What to compare the session's checkpoint with: on the demo, the demo fine-tuning run's third epoch;
    else the folder it was converted into, if the work folder remembers one; else nothing (``""``)."""
    if session.is_demo:
        return session.workspace.demo_run()[1][2]
    return session.workspace.converted_folder(session.checkpoint) or ""


class DiffUI:
    """Two pickers (A and B), Compare with progress, then the verdict, the grid and the figure."""

    def __init__(self, a: str | Path = "", b: str | Path = "", *, workspace: Workspace | None = None) -> None:
        places = standard_places(workspace.root if workspace else None)
        # widgets
        self.a_picker = PathPicker(a, description="A", kind="source", placeholder=SOURCE_HINT, places=places)
        self.b_picker = PathPicker(b, description="B", kind="source", placeholder=SOURCE_HINT, places=places)
        self.compare_button = W.Button(description="Compare", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="Compared", style=NARROW)
        self.progress_text = W.HTML()
        self.status = W.HTML()  # the verdict, the error, or what to do
        self.status_filter = W.Dropdown(options=FILTERS, value="all", description="status")
        self.name_filter = W.Text("", description="name", placeholder="part of a key, e.g. layer.11")
        self.count = W.HTML()
        self.grid = DataGrid(rows_frame([]), **diff_grid_options())
        self.plot = W.VBox()
        self.results = W.VBox(layout=W.Layout(display="none"))
        self.diff: CheckpointDiff | None = None
        self.error: BaseException | None = None
        self.all_rows: list[dict] = []
        self._result_for: tuple[str, str] | None = None  # the inputs the shown result or error came from
        self._figure = None
        self._said = ""  # what the status says, as plain text
        # connections
        for picker in (self.a_picker, self.b_picker):
            picker.path.observe(self._on_input_change, names="value")
        self.compare_button.on_click(self._on_compare_click)
        for control in (self.status_filter, self.name_filter):
            control.observe(self._on_filter_change, names="value")

    def compare(self) -> CheckpointDiff | None:
        """Compare A with B now (the kernel is busy until done) and show the result; the diff, or ``None`` if a
        path is missing or cannot be read (then the message says which, naming the file)."""
        inputs = self._inputs()
        self._clear_result()
        empty = [side for side, value in zip("AB", inputs, strict=True) if not value]
        if empty:
            self._say(f"Choose {' and '.join(empty)}: {SOURCE_HINT}; then click Compare.", error=False)
            return None
        self._set_busy(True)
        self.status.value = "<i>Comparing, tensor by tensor (the kernel is busy until it is done)…</i>"
        try:
            diff = diff_checkpoints(*(Path(value).expanduser() for value in inputs), progress=self._on_progress)
        except Exception as error:  # a path that is not a checkpoint, or anything unexpected: said, not raised
            self.error = error
            self.progress.bar_style, self.progress_text.value = "danger", ""
            self._say(failure_text(error), error=True)
        else:
            self._show(diff)
        finally:
            self._result_for = inputs
            self._set_busy(False)
        return self.diff

    def rows(self) -> list[dict]:
        """The rows the filters show."""
        return filter_diff_rows(self.all_rows, status=self.status_filter.value, text=self.name_filter.value)

    def outcome(self) -> str:
        """What the widget says, as plain text (counts, never a float): the verdict, the error, or what to do."""
        return self._said

    # handlers
    def _on_compare_click(self, button=None) -> None:
        if not self.compare_button.disabled:
            self.compare()

    def _on_input_change(self, change=None) -> None:
        if self._result_for is not None and self._inputs() != self._result_for:
            self._clear_result()

    def _on_filter_change(self, change=None) -> None:
        rows = self.rows()
        if rows:
            self.count.value = f"<b>{len(rows)}</b> of {len(self.all_rows)} tensors"
        else:
            self.count.value = nothing_found("tensor", self.name_filter.value, len(self.all_rows))
        self.grid.update(rows_frame(rows), **diff_grid_options())  # update() resets options it is not given

    def _on_progress(self, progress: Progress) -> None:
        done, total = progress.done, progress.total
        if done == total or done % max(1, total // PROGRESS_STEPS) == 0:
            self.progress.max, self.progress.value = total, done
            self.progress_text.value = f"{done} / {total} tensors"

    # showing and clearing
    def _show(self, diff: CheckpointDiff) -> None:
        self.diff, self.all_rows = diff, diff_rows(diff)
        self.progress.bar_style = "success"
        self._said = diff.verdict()
        colour = "#1b5e20" if diff.identical else "#0d47a1"
        left_out = f" · not compared: {', '.join(sorted(diff.not_compared))}" if diff.not_compared else ""
        self.status.value = (
            f"<b style='color:{colour}'>{html.escape(self._said)}</b><br>"
            f"<small>A: {html.escape(diff.a_kind)} · B: {html.escape(diff.b_kind)} · equal means bit-identical "
            f"after mapping, compared in float64{html.escape(left_out)}</small>"
        )
        self._on_filter_change()
        self._figure = new_figure(DIFF_SIZE)
        draw_diff(self._figure, diff)
        self.plot.children = [figure_widget(self._figure)]
        self.results.layout.display = "flex"

    def _say(self, text: str, *, error: bool) -> None:
        self._said, self.status.value = text, message_html(text, error=error)

    def _clear_result(self) -> None:
        self.diff, self.error, self.all_rows, self._result_for, self._said = None, None, [], None, ""
        self.progress.value, self.progress.max, self.progress.bar_style = 0, 1, ""
        self.progress_text.value = self.status.value = self.count.value = ""
        self.grid.update(rows_frame([]), **diff_grid_options())
        self.plot.children = []
        if self._figure is not None and is_interactive():
            import matplotlib.pyplot as plt

            plt.close(self._figure)  # pyplot keeps every ipympl figure until closed
        self._figure = None
        self.results.layout.display = "none"

    def _set_busy(self, busy: bool) -> None:
        for picker in (self.a_picker, self.b_picker):
            if busy:
                picker.browse.value = False
            picker.path.disabled = picker.browse.disabled = busy
        self.compare_button.disabled = busy

    def _inputs(self) -> tuple[str, str]:
        return self.a_picker.value, self.b_picker.value

    # layout
    @property
    def widget(self) -> W.VBox:
        self.results.children = [W.HBox([self.status_filter, self.name_filter]), self.count, self.grid, self.plot]
        run = W.HBox([self.compare_button, self.progress, self.progress_text])
        box = Panel([self.a_picker.widget, self.b_picker.widget, run, self.status, self.results], name="The comparison")
        box.add_class("chclip-diff")  # the handle pages and browser tests find the comparison by
        return box

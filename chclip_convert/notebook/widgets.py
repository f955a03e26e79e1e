"""ipywidgets front ends. Each UI is a small class in fixed sections — widgets, connections, handlers
(``_on_<widget>_<event>``), layout (``.widget``) — and only a view: the work is done by the same
functions the command line uses. Results go into widget state (``.value``), so a notebook saved after
running shows them, and tests drive the UI by setting values and clicking, without a browser.
"""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from ..checkpoint import check_checkpoint_path
from ..constants import (
    CONFLICT,
    DTYPE_CHOICES,
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
from ..errors import ConversionError
from ..inspection import filter_rows
from ..output import check_output_dir
from ..pipeline import convert_checkpoint
from ..report import FIXES, ConversionReport
from ..summary import ConversionSummary
from .histogram import HistogramUI as HistogramUI  # moved to its own module; imported from here too

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


def validate_inputs(checkpoint: str, output: str, vocab: str, overwrite: bool, config: str = "") -> dict[str, str]:
    """Field name → message for every input that cannot work; an empty dict means Convert may run."""
    problems = {}
    if not checkpoint.strip():
        problems["checkpoint"] = "Enter the path of an original Chinese-CLIP .pt checkpoint."
    else:
        try:
            check_checkpoint_path(Path(checkpoint.strip()).expanduser())
        except ConversionError as error:
            problems["checkpoint"] = error.message
    target = Path(output.strip()).expanduser()
    if not output.strip():
        problems["output"] = "Enter the folder to write the converted model to."
    elif target.is_dir() and any(target.iterdir()) and not overwrite:
        problems["output"] = "This folder exists and is not empty: tick Overwrite to replace it, or choose another."
    else:
        try:
            source = checkpoint.strip() or None
            check_output_dir(output.strip(), input_path=source, overwrite=overwrite)
        except ConversionError as error:
            problems["output"] = error.message
    if vocab.strip() and not Path(vocab.strip()).expanduser().is_file():
        problems["vocab"] = "No such vocabulary file."
    if config.strip() and not Path(config.strip()).expanduser().exists():
        problems["config"] = "No such config file."
    return problems


class ConvertUI:
    """Paths, dtype, vocabulary and overwrite; a Convert button; a progress bar; the summary or the error."""

    def __init__(self, checkpoint: str = "", output: str = "", *, vocab: str = "", dtype: str = "auto") -> None:
        # widgets
        self.checkpoint = W.Text(checkpoint, description="Checkpoint", layout=WIDE, style=DESCRIPTION)
        self.checkpoint_message = W.HTML()
        self.output = W.Text(output, description="Output folder", layout=WIDE, style=DESCRIPTION)
        self.output_message = W.HTML()
        self.vocab = W.Text(
            vocab,
            description="Vocabulary",
            placeholder="default: vocab.txt beside the checkpoint, or cn_clip's",
            layout=WIDE,
            style=DESCRIPTION,
        )
        self.vocab_message = W.HTML()
        self.config_message = W.HTML()
        self.config = W.Text(
            "", description="Config", placeholder="optional config.json, checked against the weights", layout=WIDE,
            style=DESCRIPTION,
        )  # fmt: skip
        self.dtype = W.Dropdown(options=DTYPE_CHOICES, value=dtype, description="dtype", style=DESCRIPTION)
        self.overwrite = W.Checkbox(False, description="Overwrite a non-empty output folder", indent=False)
        self.convert_button = W.Button(description="Convert", button_style="primary", icon="play")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Writing", style=DESCRIPTION)
        self.status = W.HTML()
        self.summary: ConversionSummary | None = None
        self.error: ConversionError | None = None
        # connections
        for field in (self.checkpoint, self.output, self.vocab, self.config, self.overwrite):
            field.observe(self._on_field_change, names="value")
        self.convert_button.on_click(self._on_convert_click)
        self._validate()

    # handlers
    def _on_field_change(self, change=None) -> None:
        self._validate()

    def _on_convert_click(self, button=None) -> None:
        if self._validate():
            return
        self.convert_button.disabled = True
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.status.value = "<i>Converting…</i>"
        self.summary, self.error = None, None
        try:
            self.summary = convert_checkpoint(
                self.checkpoint.value.strip(),
                self.output.value.strip(),
                dtype=self.dtype.value,
                vocab=self.vocab.value.strip() or None,
                config=self.config.value.strip() or None,
                overwrite=self.overwrite.value,
                progress=self._on_progress,
            )
        except ConversionError as error:
            self.error = error
            self.progress.bar_style = "danger"
            self.status.value = _message_html(str(error), error=True)
        else:
            self.progress.value, self.progress.bar_style = 1.0, "success"
            self.status.value = self.summary.to_html()
        finally:
            self._validate()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.value = done / total if total else 1.0

    def _validate(self) -> dict[str, str]:
        problems = validate_inputs(
            self.checkpoint.value, self.output.value, self.vocab.value, self.overwrite.value, self.config.value
        )
        self.config_message.value = _inline(problems.get("config"))
        self.checkpoint_message.value = _inline(problems.get("checkpoint"))
        self.output_message.value = _inline(problems.get("output"))
        self.vocab_message.value = _inline(problems.get("vocab"))
        self.convert_button.disabled = bool(problems)
        return problems

    # layout
    @property
    def widget(self) -> W.VBox:
        return W.VBox(
            [
                self.checkpoint,
                self.checkpoint_message,
                self.output,
                self.output_message,
                self.vocab,
                self.vocab_message,
                self.config,
                self.config_message,
                W.HBox([self.dtype, self.overwrite]),
                W.HBox([self.convert_button, self.progress]),
                self.status,
            ]
        )


def _inline(message: str | None) -> str:
    return _message_html(message, error=True) if message else ""


def _message_html(text: str, *, error: bool) -> str:
    colour = "#b71c1c" if error else "#1b5e20"
    return f"<pre style='color:{colour};white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>"


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

"""Notebook 06's exporter: a converted folder into the ONNX files onnxruntime and transformers.js load, checked
against the PyTorch model (and cn_clip's own, when at hand), in the background with progress and Cancel
(:class:`ExportUI`); and the parity table it shows (:func:`parity_html`).

The work is :func:`chclip_convert.export.pipeline.export_onnx`, as ``chclip-convert export-onnx`` does it: the
files appear only once every check passes, and Cancel or a failure leaves nothing behind.
"""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as W

from chclip_convert.errors import ConversionError
from chclip_convert.files.output import check_output_dir, output_path
from chclip_convert.names import EXPORT_REPORT_FILE
from chclip_convert.notebook.background import BackgroundTask
from chclip_convert.notebook.converter import failure_text, message_html
from chclip_convert.notebook.elements import Panel, in_widget_terms, run_again, wrapping_row
from chclip_convert.notebook.fonts import cjk_html
from chclip_convert.notebook.picker import DESCRIPTION, PathPicker
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.units import human_duration, human_size

if TYPE_CHECKING:
    from chclip_convert.export.report import ExportReport

REPLACE = "Replace an existing ONNX folder"  # the Overwrite of this widget, as the core's advice names it
KEEP_FAILED = "Keep files that fail their check"


class ExportUI:
    """Output folder (default ``folder/onnx``), float16 and int8 variants, replace and keep-failed; Export and
    Cancel; progress by step; then the parity table of every file, or the error. ``report`` holds the result."""

    def __init__(self, folder: str | Path, output: str | Path | None = None) -> None:
        self.folder = Path(folder)
        # widgets
        self.output_picker = PathPicker(output or self.folder / "onnx", description="ONNX folder", kind="output")
        self.output = self.output_picker.path
        fit = {"indent": False, "layout": W.Layout(width="auto", margin="0 24px 0 0")}  # a row that fits 950 px
        self.fp16 = W.Checkbox(False, description="Add float16 files (*_fp16.onnx)", **fit)
        self.quantize = W.Checkbox(False, description="Add int8 files (*_quantized.onnx)", **fit)
        self.overwrite = W.Checkbox(False, description=REPLACE, **fit)
        self.keep_failed = W.Checkbox(False, description=KEEP_FAILED, **fit)
        self._fields = (self.output, self.fp16, self.quantize, self.overwrite, self.keep_failed)
        self.message = W.HTML()
        self.export_button = W.Button(description="Export", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress", style=DESCRIPTION)
        self.progress_text = W.HTML()
        self.status = W.HTML()
        self.table = W.HTML(layout=W.Layout(width="100%"))  # the panel's width: the table scrolls inside it
        self.report: ExportReport | None = None  # what the last export wrote and checked, once it ended well
        self.error: Exception | None = None
        self.task = BackgroundTask(self._on_progress, self._show_busy)
        # connections
        for field in self._fields:
            field.observe(self._on_input_change, names="value")
        self.export_button.on_click(self._on_export_click)
        self.cancel_button.on_click(self._on_cancel_click)
        self._validate()

    @property
    def onnx_dir(self) -> Path:
        """The ONNX folder typed, as the export names it."""
        return output_path(Path(self.output.value.strip()).expanduser())

    @property
    def exported_dir(self) -> Path | None:
        """The folder holding checked ONNX files: the one just exported, else the one typed if an export wrote it
        before (its ``export_report.json`` beside both towers); ``None`` if neither."""
        if self.report is not None:
            return self.report.output_dir
        try:
            return self.onnx_dir if exported_before(self.onnx_dir) else None
        except ConversionError:  # "/", say
            return None

    def wait(self, timeout: float | None = None) -> ExportReport | None:
        """Block until the running export ends; its report, or ``None`` after an error or Cancel."""
        self.task.wait(timeout)
        return self.report

    def outcome(self) -> str:
        """What the widget shows, as plain text: each file's verdict, the error, or why Export cannot run."""
        if self.report is not None:
            return verdicts_text(self.report)
        if self.error is not None:
            return export_failure_text(self.error)
        if self.task.cancelled:
            return "Cancelled: nothing was written."
        if self.exported_dir is not None:
            return f"Exported into {self.exported_dir} before."
        return "\n".join(self._validate().values()) or "Not exported yet: click Export."

    # handlers
    def _on_input_change(self, change=None) -> None:
        if self.task.busy:
            return
        self.report, self.error = None, None
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.progress_text.value = self.status.value = self.table.value = ""
        self._validate()

    def _on_export_click(self, button=None) -> None:
        if self.task.busy or self._validate() or self.export_button.disabled:  # a click queued before it was disabled
            return
        self.report, self.error = None, None
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.status.value, self.table.value = "<i>Loading the exporter's libraries (onnx, onnxruntime)…</i>", ""
        inputs = (
            self.onnx_dir, "float16" if self.fp16.value else "float32", self.quantize.value, self.overwrite.value,
            self.keep_failed.value,
        )  # fmt: skip
        self.task.start(partial(self._export, self.folder, *inputs), self._on_export_end)

    def _on_cancel_click(self, button=None) -> None:
        if self.task.cancel():
            self.cancel_button.disabled = True
            self.status.value = "<i>Cancelling at the end of this step…</i>"

    def _on_progress(self, progress: Progress) -> None:
        if self.task.cancel_requested:  # "Cancelling…" stays
            return
        self.progress.value = progress.fraction
        stage = html.escape(progress.stage[:1].upper() + progress.stage[1:])
        self.status.value = f"<i>{stage}…</i>"
        if progress.unit == "steps":
            self.progress_text.value = f"step {progress.done + 1} of {progress.total}"

    # the work, in the task's thread
    @staticmethod
    def _export(folder, onnx_dir, dtype, quantize, overwrite, keep_failed, progress: OnProgress) -> ExportReport:
        from chclip_convert.export.pipeline import export_onnx  # imports torch.onnx: seconds, the first time

        return export_onnx(
            folder, onnx_dir, dtype=dtype, quantize=quantize, overwrite=overwrite, keep_failed=keep_failed,
            progress=progress,
        )  # fmt: skip

    def _on_export_end(self, task: BackgroundTask) -> None:
        self.progress_text.value = ""
        late = task.cancel_requested and not task.cancelled  # the export had passed its last step
        if task.cancelled:
            self.progress.bar_style = "warning"
            self.status.value = message_html(
                "Cancelled: nothing was written; the ONNX folder is as it was.", error=False
            )
        elif task.error is not None:
            self.error, self.progress.bar_style = task.error, "danger"
            self.status.value = message_html(export_failure_text(task.error), error=True)
            report = getattr(task.error, "report", None)
            self.table.value = parity_html(report) if report is not None else ""
        else:
            self.report = report = task.result
            self.progress.value, self.progress.bar_style = 1.0, "success" if report.ok else "warning"
            self.progress_text.value = f"done in {human_duration(report.seconds)}"
            said = "<b>Cancel came too late: the export had finished, and its files are in place.</b><br>" * late
            hint = html.escape(run_again("rank the captions and time the files"))
            self.status.value = cjk_html(f"{said}{_files_html(report)}<br>{hint}")
            self.table.value = parity_html(report)

    def _show_busy(self, busy: bool) -> None:
        if busy:
            self.output_picker.browse.value = False
        for field in self._fields:
            field.disabled = busy
        self.output_picker.browse.disabled = busy
        self.cancel_button.disabled = not busy
        self.export_button.disabled = busy
        if not busy:
            self._validate()

    def _validate(self) -> dict[str, str]:
        """Show why Export cannot run, if it cannot, and enable it only when nothing stands in the way."""
        problems = export_problems(self.folder, self.output.value, overwrite=self.overwrite.value)
        if set(problems) == {"output"} and not self.overwrite.value and self.exported_dir is not None:  # a result
            before = "" if self._exported_here() else " before"
            self.message.value = message_html(f'Exported here{before}: tick "{REPLACE}" to export again.', error=False)
            self.export_button.disabled = True
            return {}
        self.message.value = "".join(message_html(text, error=True) for text in problems.values())
        self.export_button.disabled = bool(problems) or self.task.busy
        return problems

    def _exported_here(self) -> bool:
        """Whether the report shown is of an export into the folder typed."""
        try:
            return self.report is not None and self.report.output_dir == self.onnx_dir
        except ConversionError:  # "/", say: a problem _validate shows
            return False

    # layout
    @property
    def widget(self) -> W.VBox:
        options = wrapping_row([self.fp16, self.quantize, self.overwrite, self.keep_failed])
        run = wrapping_row([self.export_button, self.cancel_button, self.progress, self.progress_text])
        parts = [self.output_picker.widget, options, self.message, run, self.status, self.table]
        return Panel(parts, name="The ONNX exporter")


def export_problems(folder: Path, output: str, *, overwrite: bool) -> dict[str, str]:
    """Field name → why an export of ``folder`` into ``output`` cannot run (the export extra missing, the folder
    no ChineseCLIPModel, the output taken); empty when it may."""
    from chclip_convert.export.requirements import missing_export_packages, require_export_packages

    problems = {}
    try:
        if missing_export_packages():
            require_export_packages()
        from chclip_convert.export.pipeline import require_chinese_clip_folder  # after the check: imports torch

        require_chinese_clip_folder(folder)
    except ConversionError as error:
        problems["folder"] = str(error)
    if not output.strip():
        problems["output"] = "Enter the folder to write the ONNX files to."
        return problems
    try:
        check_output_dir(Path(output.strip()).expanduser(), input_path=None, overwrite=overwrite)
    except ConversionError as error:
        problems["output"] = in_widget_terms(str(error), overwrite=REPLACE)
    return problems


def export_failure_text(error: Exception) -> str:
    """An export's refusal in the widget's terms (its checkboxes for the command's options)."""
    return in_widget_terms(failure_text(error), overwrite=REPLACE)


def exported_before(onnx_dir: Path) -> bool:
    """Whether ``onnx_dir`` holds what an export wrote: its ``export_report.json`` and both towers' files."""
    from chclip_convert.export.latency import exported_variants

    return (onnx_dir / EXPORT_REPORT_FILE).is_file() and bool(exported_variants(onnx_dir))


def verdicts_text(report: ExportReport) -> str:
    """The verdict in one line, and each failing check: text that stays the same where the figures' last digits
    change from one CPU to another."""
    files = len({check.file for check in report.checks})
    cases = len({row.case for row in report.summary_rows()})
    failing = [f"FAIL  {check.file}  {check.case}: {check.metric}" for check in report.failures]
    verdict = "every check passes" if report.ok else f"{len(report.failures)} checks FAILED"
    return "\n".join([f"{files} files, each in {cases} cases: {verdict}", *failing])


def parity_html(report: ExportReport) -> str:
    """The parity table: a row per file and batch case, its verdict first, then its worst figures beside its
    variant's limits. Each row keeps to one line; in a panel narrower than the table (notebooks side by side),
    the table scrolls sideways in its own box, its verdicts in view."""
    from chclip_convert.export.parity import TOLERANCES

    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{title}</th>" for title in PARITY_COLUMNS)
    body = "".join(_parity_row(row, TOLERANCES[row.variant]) for row in report.summary_rows())
    failures = "".join(f"<li>{html.escape(check.describe())}</li>" for check in report.failures)
    said = f"<ul style='color:#b71c1c;margin:4px 0'>{failures}</ul>" if failures else ""
    table = f"<table class='parity-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    # No width of its own (the box never widens the page to the table's), then all its panel's: the table scrolls
    box = "overflow-x:auto;width:0;min-width:100%"
    return f"<div class='parity-scroll' style='{box}'>{table}</div>{said}"


PARITY_COLUMNS = ("verdict", "file", "inputs", "max abs diff / scale", "least cosine", "best caption agrees")


def _parity_row(row, tolerance) -> str:
    limit = f" (≤ {tolerance.max_abs:g})" if tolerance.max_abs is not None else " (reported)"
    cosine = f"{row.min_cosine:.6f} (≥ {tolerance.min_cosine:g})" if row.min_cosine is not None else "—"
    colour = "#1b5e20" if row.ok else "#b71c1c"
    cells = (
        f"<b style='color:{colour}'>{'PASS' if row.ok else 'FAIL'}</b>", f"<code>{html.escape(row.file)}</code>",
        html.escape(row.case), f"{row.relative_difference:.1e}{limit}", cosine, html.escape(row.top1 or "—"),
    )  # fmt: skip
    return "<tr>" + "".join(f"<td style='padding:2px 8px;white-space:nowrap'>{cell}</td>" for cell in cells) + "</tr>"


def _files_html(report: ExportReport) -> str:
    files = ", ".join(f"<code>{html.escape(name)}</code> {human_size(size)}" for name, size in report.files.items())
    verdict = "Exported and verified" if report.ok else "Exported; checks FAILED, files kept as asked"
    return f"{verdict} into <code>{html.escape(str(report.output_dir))}</code>: {files}"

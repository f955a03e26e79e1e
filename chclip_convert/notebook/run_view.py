"""Notebook 05's widgets: the run to look at (a reference and a run folder), the epochs as their metadata
describe them, the drift figures, converting the chosen epochs in one go, and averaging them into one."""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path

import ipywidgets as W

from chclip_convert.changes.drift import (
    Drift,
    EpochInfo,
    epoch_table,
    measure_drift,
    read_run,
    run_checkpoints,
    skipped_checkpoints,
)
from chclip_convert.changes.epochs import CONVERTED, FAILED, UP_TO_DATE
from chclip_convert.errors import ConversionError
from chclip_convert.files.preflight import cn_clip_run
from chclip_convert.names import DTYPE_CHOICES
from chclip_convert.notebook.background import BackgroundTask
from chclip_convert.notebook.converter import message_html
from chclip_convert.notebook.elements import (
    RUN_BELOW_HINT,
    Panel,
    in_voila,
    in_widget_terms,
    notebook_hint,
    run_again,
    wrapping_row,
)
from chclip_convert.notebook.fonts import cjk_html
from chclip_convert.notebook.picker import DESCRIPTION, WIDE, PathPicker, standard_places
from chclip_convert.notebook.plotting.figures import RUN_CURVES_SIZE, RUN_HEATMAPS_SIZE, figure_widget, new_figure
from chclip_convert.notebook.plotting.runs import draw_curves, draw_heatmaps
from chclip_convert.notebook.workspace import AVERAGED_DIR, CONVERTED_DIR, DEMO_RUN_SUBDIR, Workspace
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.units import human_size

REPLACE_LABEL = "Replace converted folders of other checkpoints"  # 05's overwrite checkbox


class RunSession:
    """The top of notebook 05: the work folder, the reference checkpoint (``.pt`` or converted folder) and the
    run folder (its checkpoints, or its ``checkpoints/`` subfolder); the last choice, else the demo run."""

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace or Workspace()
        reference, folder, _ = self.workspace.run()
        places = standard_places(self.workspace.root)
        # widgets
        self.header = W.HTML(self.workspace.header_html())
        self.reference_picker = PathPicker(reference, description="Reference", kind="source", places=places)
        self.run_picker = PathPicker(folder, description="Run folder", kind="folder", places=places)
        self.message = W.HTML()
        # connections
        for picker in (self.reference_picker, self.run_picker):
            picker.path.observe(self._on_path_change, names="value")

    @property
    def reference(self) -> Path:
        return Path(self.reference_picker.value).expanduser().absolute()

    @property
    def run_folder(self) -> Path:
        return Path(self.run_picker.value).expanduser().absolute()

    @property
    def is_demo(self) -> bool:
        return self.run_folder == (self.workspace.root / DEMO_RUN_SUBDIR).absolute()

    def epochs(self) -> list[EpochInfo]:
        """The run's checkpoints in training order, from their metadata alone (the reference left out); none,
        with the problem printed, if the choice above cannot be used."""
        problem = self.problem()
        if not problem:
            try:
                epochs = read_run([self.run_folder], exclude=self.reference)
                for entry in skipped_checkpoints([self.run_folder]):
                    print(f"skipped: {entry}")
                return epochs
            except ConversionError as error:
                problem = str(error)
        then = "reload the page" if in_voila() else "run the cells again"
        print(f"problem: {problem}\nChoose another reference or run folder above, then {then}.")
        return []

    def problem(self) -> str:
        """Why the reference and run folder chosen cannot be looked at, or ``""``."""
        if not self.reference.exists():
            return f"{self.reference}: no such checkpoint or folder."
        if not self.run_folder.is_dir():
            return f"{self.run_folder}: is not a folder of checkpoints."
        try:
            paths = run_checkpoints([self.run_folder])
        except ConversionError as error:
            return str(error)
        if all(path.resolve() == self.reference.resolve() for path in paths):
            return f"{self.run_folder}: holds no checkpoint besides the reference."
        return ""

    # handlers
    def _on_path_change(self, change=None) -> None:
        problem = self.problem()
        if problem:
            self.message.value = message_html(problem, error=True)
            return
        self.workspace.remember_run(self.reference, self.run_folder)
        self.message.value = message_html(run_again("look at this run"), error=False)

    # layout
    @property
    def widget(self) -> W.VBox:
        parts = [self.header, self.reference_picker.widget, self.run_picker.widget, self.message]
        parts += notebook_hint(RUN_BELOW_HINT)
        return Panel(parts, name="The reference checkpoint and the run folder")


def print_epochs(infos: list[EpochInfo]) -> None:
    """The epoch table as text (for the notebook's stored output, which nbval compares)."""
    print("\n".join(epoch_table(infos)))


def measure(session: RunSession, epochs: list[EpochInfo], *, also: Path | None = None) -> Drift | None:
    """Measure the run's drift, showing a progress bar while it reads; ``None`` (said so) with no epochs.

    ``also`` is one more checkpoint to show, an average of the epochs, say: it comes after them, a column of
    its own."""
    from IPython.display import display

    if not epochs:
        print("Nothing to measure: the run has no epoch to compare with the reference (see above).")
        return None
    bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Reading", style=DESCRIPTION)
    display(bar)
    paths = [info.path for info in epochs if info.same_as is None] + ([also] if also is not None else [])
    drift = measure_drift(session.reference, paths, progress=lambda step: _advance(bar, step))
    bar.value, bar.bar_style = 1.0, "success"
    return drift


def average_between_epochs(drift: Drift) -> bool:
    """Whether, in ``drift`` whose last column is an average of the epochs before it, the average's change from the
    reference lies between the epochs' smallest and largest, in every part that moved."""
    return all(
        min(values[:-1]) <= values[-1] <= max(values[:-1])
        for part, values in drift.vs_reference.items()
        if drift.moved(part)
    )


def _advance(bar: W.FloatProgress, step: Progress) -> None:
    if step.done == step.total or step.done % 16 == 0:  # a few hundred updates for a run, not one per tensor and epoch
        bar.value = step.fraction


def heatmap_view(drift: Drift | None) -> W.Box:
    """The per-layer heatmaps, per tower, from the reference and epoch to epoch (nothing without a drift)."""
    if drift is None:
        return W.VBox()
    figure = new_figure(RUN_HEATMAPS_SIZE)
    draw_heatmaps(figure, drift)
    return figure_widget(figure)


def curves_view(drift: Drift | None) -> W.Box:
    """The embeddings', projections' and ``logit_scale``'s relative change, per epoch (nothing without a drift)."""
    if drift is None:
        return W.VBox()
    figure = new_figure(RUN_CURVES_SIZE)
    draw_curves(figure, drift)
    return figure_widget(figure)


class EpochConvertUI:
    """Choose epochs, convert them in one go: one progress bar, each folder checked, folders that still match
    their checkpoint left as they are. Runs in a thread (the kernel stays free); Cancel stops at the next
    tensor and leaves no partial folder."""

    def __init__(self, infos: list[EpochInfo], into: str | Path, *, dtype: str = "auto") -> None:
        # a repeat of another epoch (epoch_latest.pt) is not offered: its folder would be a second copy
        options = [(_option_label(info), info.path) for info in infos if info.same_as is None]
        # widgets
        rows = min(8, max(3, len(options)))
        self.epochs = W.SelectMultiple(options=options, rows=rows, description="Epochs", layout=WIDE, style=DESCRIPTION)
        self.into = W.Text(str(into), description="Into folder", layout=WIDE, style=DESCRIPTION)
        self.dtype = W.Dropdown(options=DTYPE_CHOICES, value=dtype, description="dtype", style=DESCRIPTION)
        self.overwrite = W.Checkbox(
            False, description=REPLACE_LABEL, indent=False,
            layout=W.Layout(width="auto"),
        )  # fmt: skip
        self.convert_button = W.Button(description="Convert", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0)
        self.progress_text = W.HTML()
        self.results = W.HTML()
        self.outcomes: list = []
        self.task = BackgroundTask(self._on_progress, self._show_busy)
        # connections
        self.convert_button.on_click(self._on_convert_click)
        self.cancel_button.on_click(self._on_cancel_click)
        for field in (self.epochs, self.into, self.dtype, self.overwrite):
            field.observe(self._on_input_change, names="value")

    def wait(self, timeout: float | None = None) -> list:
        """Block until the running batch ends; the outcomes of the checkpoints done (all, unless cancelled)."""
        self.task.wait(timeout)
        return self.outcomes

    # handlers
    def _on_input_change(self, change=None) -> None:
        if not self.task.busy:
            self.outcomes, self.results.value, self.progress_text.value = [], "", ""
            self.progress.value, self.progress.bar_style = 0.0, ""

    def _on_convert_click(self, button=None) -> None:
        if self.task.busy or self.convert_button.disabled:
            return
        if not self.epochs.value:
            self.results.value = message_html("Choose one or more epochs first.", error=True)
            return
        chosen = list(self.epochs.value)
        inputs = (chosen, self.into.value.strip(), self.dtype.value, self.overwrite.value)
        self.outcomes = []
        self.task.start(partial(self._convert, *inputs), partial(self._on_convert_end, len(chosen)))

    def _on_cancel_click(self, button=None) -> None:
        if not self.task.cancel():  # it ended as the click arrived
            return
        self.cancel_button.disabled = True
        self.progress_text.value = "<i>Cancelling…</i>"

    def _on_progress(self, progress: Progress) -> None:
        self.progress.value = progress.fraction
        self.progress_text.value = html.escape(
            f"{progress.index} / {progress.count} · {Path(progress.item).name}: {progress.stage} · "
            f"{human_size(progress.done)} of {human_size(progress.total)}"
        )

    # the work, in the task's thread
    def _convert(self, chosen: list[Path], into: str, dtype: str, overwrite: bool, progress: OnProgress) -> None:
        from chclip_convert.changes.epochs import convert_epochs
        from chclip_convert.verification.model_outputs import quiet_transformers

        quiet_transformers()
        convert_epochs(chosen, into, dtype=dtype, overwrite=overwrite, progress=progress,
                       on_result=self.outcomes.append)  # fmt: skip

    def _on_convert_end(self, chosen: int, task: BackgroundTask) -> None:
        from chclip_convert.changes.epochs import FAILED

        if task.error is not None:  # anything unexpected is shown, not lost in the thread
            self.progress.bar_style = "danger"
            self.results.value = message_html(str(task.error), error=True)
            return
        done = len(self.outcomes)
        if task.cancelled:
            self.progress.bar_style = "warning"
            self.progress_text.value = (
                f"Cancelled after {done} of {chosen}: the epoch being converted or checked left nothing"
                + ("; those done are listed below." if done else ".")
            )
        else:
            failed = any(outcome.outcome == FAILED for outcome in self.outcomes)
            self.progress.value, self.progress.bar_style = 1.0, "danger" if failed else "success"
            self.progress_text.value = f"{done} epoch{'s' if done != 1 else ''} done"
        self.results.value = outcomes_html(self.outcomes)

    def _show_busy(self, busy: bool) -> None:
        for field in (self.epochs, self.into, self.dtype, self.overwrite, self.convert_button):
            field.disabled = busy
        self.cancel_button.disabled = not busy

    # layout
    @property
    def widget(self) -> W.VBox:
        buttons = wrapping_row([self.convert_button, self.cancel_button, self.progress, self.progress_text])
        parts = [self.epochs, self.into, wrapping_row([self.dtype, self.overwrite]), buttons, self.results]
        return Panel(parts, name="The epochs' converter")


class EpochAverageUI:
    """Choose epochs (and, if not equal, their weights) and average them into one checkpoint, cn_clip's training
    dict without optimizer (:func:`chclip_convert.changes.average.average_checkpoints`). Runs in a thread, with
    progress and Cancel; nothing is left of a cancelled or failed average. ``written`` is the file, once made."""

    def __init__(self, infos: list[EpochInfo], output: str | Path) -> None:
        options = [(_option_label(info), info.path) for info in infos if info.same_as is None]
        # widgets
        rows = min(8, max(3, len(options)))
        self.epochs = W.SelectMultiple(options=options, rows=rows, description="Epochs", layout=WIDE, style=DESCRIPTION)
        self.weights = W.Text("", placeholder="equal; or one per epoch chosen, as proportions: 1 1 2",
                              description="Weights", layout=WIDE, style=DESCRIPTION)  # fmt: skip
        self.output = W.Text(str(output), description="Into file", layout=WIDE, style=DESCRIPTION)
        self.overwrite = W.Checkbox(False, description="Replace the file if it exists", indent=False,
                                    layout=W.Layout(width="auto"))  # fmt: skip
        self.average_button = W.Button(description="Average", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0)
        self.progress_text = W.HTML()
        self.results = W.HTML()
        self.task = BackgroundTask(self._on_progress, self._show_busy)
        # connections
        self.average_button.on_click(self._on_average_click)
        self.cancel_button.on_click(self._on_cancel_click)
        for field in (self.epochs, self.weights, self.output, self.overwrite):
            field.observe(self._on_input_change, names="value")

    @property
    def written(self) -> Path | None:
        """The average written by the last click, if it ended well."""
        summary = self.task.result
        return summary.output if summary is not None and not self.task.busy else None

    def wait(self, timeout: float | None = None) -> Path | None:
        """Block until the running average ends; the file written, or ``None``."""
        self.task.wait(timeout)
        return self.written

    # handlers
    def _on_input_change(self, change=None) -> None:
        if not self.task.busy:
            self.results.value, self.progress_text.value = "", ""
            self.progress.value, self.progress.bar_style = 0.0, ""

    def _on_average_click(self, button=None) -> None:
        if self.task.busy or self.average_button.disabled:
            return
        problem, weights = _weights(self.weights.value, len(self.epochs.value))
        if not self.epochs.value or problem:
            self.results.value = message_html(problem or "Choose one or more epochs first.", error=True)
            return
        inputs = (list(self.epochs.value), self.output.value.strip(), weights, self.overwrite.value)
        self.task.start(partial(self._average, *inputs), self._on_average_end)

    def _on_cancel_click(self, button=None) -> None:
        if self.task.cancel():
            self.cancel_button.disabled = True
            self.progress_text.value = "<i>Cancelling…</i>"

    def _on_progress(self, progress: Progress) -> None:
        self.progress.value = progress.fraction
        self.progress_text.value = html.escape(
            f"{progress.stage} · {human_size(progress.done)} of {human_size(progress.total)}"
        )

    # the work, in the task's thread
    @staticmethod
    def _average(chosen: list[Path], output: str, weights, overwrite: bool, progress: OnProgress):
        from chclip_convert.changes.average import average_checkpoints

        return average_checkpoints(chosen, output, weights=weights, overwrite=overwrite, progress=progress)

    def _on_average_end(self, task: BackgroundTask) -> None:
        if task.error is not None:
            self.progress.bar_style = "danger"
            self.results.value = message_html(str(task.error), error=True)
        elif task.cancelled:
            self.progress.bar_style, self.progress_text.value = "warning", "Cancelled: nothing was written."
        else:
            self.progress.value, self.progress.bar_style, self.progress_text.value = 1.0, "success", "done"
            self.results.value = f"<pre>{html.escape(task.result.to_text())}</pre>"

    def _show_busy(self, busy: bool) -> None:
        for field in (self.epochs, self.weights, self.output, self.overwrite, self.average_button):
            field.disabled = busy
        self.cancel_button.disabled = not busy

    # layout
    @property
    def widget(self) -> W.VBox:
        buttons = wrapping_row([self.average_button, self.cancel_button, self.progress, self.progress_text])
        parts = [self.epochs, self.weights, self.output, self.overwrite, buttons, self.results]
        return Panel(parts, name="The epochs' averager")


def _weights(text: str, count: int) -> tuple[str, list[float] | None]:
    """The weights typed (``""``: equal), or why they cannot be used."""
    words = text.replace(",", " ").split()
    if not words:
        return "", None
    try:
        weights = [float(word) for word in words]
    except ValueError:
        return f"Weights are numbers, one per epoch chosen: {text!r} is not.", None
    if len(weights) != count:
        return f"{len(weights)} weight(s) for {count} epoch(s) chosen: give one per epoch, or none.", None
    return "", weights


def default_average(workspace: Workspace, infos: list[EpochInfo]) -> Path:
    """Where an average of the run's epochs goes by default: ``averaged/<run>-avg.pt`` in the work folder."""
    first = next((info.path for info in infos), None)
    run = (cn_clip_run(first) or first.parent).name if first is not None else "run"
    return workspace.root / AVERAGED_DIR / f"{run}-avg.pt"


def _option_label(info: EpochInfo) -> str:
    epoch = f"epoch {info.epoch}" if info.epoch is not None else "no epoch"
    step = f" · step {info.step}" if info.step is not None else ""
    return f"{info.name} — {epoch}{step}"


def outcomes_html(outcomes) -> str:
    """One row per checkpoint: outcome (coloured), the folder, and the check or the error."""
    colours = {CONVERTED: "#2e7d32", UP_TO_DATE: "#1565c0", FAILED: "#c62828"}
    rows = "".join(
        f"<tr><td style='padding:2px 8px'>{html.escape(o.checkpoint.name)}</td>"
        f"<td style='padding:2px 8px;color:{colours.get(o.outcome, '#000')}'><b>{html.escape(o.outcome)}</b></td>"
        f"<td style='padding:2px 8px'><code>{html.escape(str(o.folder))}</code><br>"
        f"{html.escape(in_widget_terms(o.detail, overwrite=REPLACE_LABEL))}</td></tr>"
        for o in outcomes
    )
    return cjk_html(f"<table class='epoch-outcomes'>{rows}</table>")


def default_into(workspace: Workspace) -> Path:
    """Where chosen epochs are converted by default: ``converted/`` in the work folder."""
    return workspace.root / CONVERTED_DIR

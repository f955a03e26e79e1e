"""Notebook 05's widgets: the run to look at (a reference and a run folder), the epochs as their metadata
describe them, the drift figures, and converting the chosen epochs in one go."""

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
from chclip_convert.names import DTYPE_CHOICES
from chclip_convert.notebook.background import BackgroundTask
from chclip_convert.notebook.converter import message_html
from chclip_convert.notebook.elements import RUN_BELOW_HINT, Panel, in_voila, in_widget_terms, notebook_hint, run_again
from chclip_convert.notebook.fonts import cjk_html
from chclip_convert.notebook.picker import DESCRIPTION, WIDE, PathPicker, standard_places
from chclip_convert.notebook.plotting.figures import RUN_CURVES_SIZE, RUN_HEATMAPS_SIZE, figure_widget, new_figure
from chclip_convert.notebook.plotting.runs import draw_curves, draw_heatmaps
from chclip_convert.notebook.workspace import CONVERTED_DIR, DEMO_RUN_SUBDIR, Workspace
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


def measure(session: RunSession, epochs: list[EpochInfo]) -> Drift | None:
    """Measure the run's drift, showing a progress bar while it reads; ``None`` (said so) with no epochs."""
    from IPython.display import display

    if not epochs:
        print("Nothing to measure: the run has no epoch to compare with the reference (see above).")
        return None
    bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Reading", style=DESCRIPTION)
    display(bar)
    drift = measure_drift(
        session.reference, [info.path for info in epochs if info.same_as is None],
        progress=lambda step: _advance(bar, step),
    )  # fmt: skip
    bar.value, bar.bar_style = 1.0, "success"
    return drift


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
        buttons = W.HBox([self.convert_button, self.cancel_button, self.progress, self.progress_text])
        parts = [self.epochs, self.into, W.HBox([self.dtype, self.overwrite]), buttons, self.results]
        return Panel(parts, name="The epochs' converter")


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

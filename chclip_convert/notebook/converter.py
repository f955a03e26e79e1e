"""The converter widget: pick a checkpoint and an output folder, convert in the background with progress and
Cancel, and see the summary with the next steps for the folder just written.

Results and errors belong to the inputs they came from: changing any input clears them. So does the choice to
overwrite: *Overwrite* goes back to unticked whenever the checkpoint or the output folder changes, and only the
embedded demo, converting into the folder suggested for it, has it ticked for the user (so that it converts
again on every run). Conversion runs in a thread, so the kernel stays free; :meth:`ConvertUI.wait` blocks until
it ends (for *Run all*).
"""

from __future__ import annotations

import html
import re
import shlex
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import ipywidgets as W

from chclip_convert.errors import ConversionError
from chclip_convert.files.output import check_output_dir
from chclip_convert.files.preflight import check_checkpoint_path, looks_converted
from chclip_convert.names import DTYPE_CHOICES
from chclip_convert.notebook.background import BackgroundTask
from chclip_convert.notebook.elements import LinkedHTML, Panel, in_widget_terms, notebook_link, wrapping_row
from chclip_convert.notebook.fonts import cjk_html
from chclip_convert.notebook.picker import DESCRIPTION, WIDE, PathPicker, standard_places
from chclip_convert.notebook.workspace import Workspace
from chclip_convert.progress import WRITING, OnProgress, Progress
from chclip_convert.units import human_duration, human_size

if TYPE_CHECKING:
    from chclip_convert.conversion.summary import ConversionSummary

LOADING = "loading the converter's libraries (torch, transformers)"  # what a first conversion waits for
# The notebooks that take a converted folder, in the order a user would open them.
NEXT_STEPS = {
    "02_inspect_keys.ipynb": "what happened to every key",
    "03_weight_stats.ipynb": "weights before and after, per layer",
    "04_verify_and_save.ipynb": "outputs against the original model; save in another dtype",
    "06_deploy.ipynb": "ONNX files for onnxruntime and transformers.js",
}


def validate_inputs(checkpoint: str, output: str, vocab: str, overwrite: bool, config: str = "") -> dict[str, str]:
    """Field name → message for every input that cannot work; an empty dict means Convert may run."""
    try:
        return _problems(checkpoint, output, vocab, overwrite, config)
    except OSError as error:  # a path on the way this user may not enter: said, not raised from an observer
        return {"output": f"{error.filename or output}: cannot be read ({error.strerror or error})."}


def checkpoint_problem(checkpoint: str) -> str:
    """Why the path typed in a checkpoint field cannot be converted, naming it (in full); ``""`` if it may be."""
    if not checkpoint.strip():
        return "Enter the path of an original Chinese-CLIP .pt checkpoint, or Browse for it."
    try:
        check_checkpoint_path(Path(checkpoint.strip()).expanduser().absolute())
    except ConversionError as error:
        return str(error)  # "<path>: <message>"
    return ""


def _problems(checkpoint: str, output: str, vocab: str, overwrite: bool, config: str) -> dict[str, str]:
    problems = {}
    if message := checkpoint_problem(checkpoint):
        problems["checkpoint"] = message
    target = Path(output.strip()).expanduser()
    occupied = bool(output.strip()) and target.is_dir() and any(target.iterdir())
    if not output.strip():
        problems["output"] = "Enter the folder to write the converted model to."
    elif occupied and not overwrite:
        problems["output"] = (
            f"{target}: exists and is not empty: choose another, or tick Overwrite to replace what it holds."
        )
    else:
        try:
            check_output_dir(output.strip(), input_path=checkpoint.strip() or None, overwrite=overwrite)
        except ConversionError as error:
            problems["output"] = in_widget_terms(str(error))
        else:
            if occupied and not looks_converted(target):
                problems["output"] = (
                    f"{target}: holds files but no converted model (config.json and weights): Overwrite replaces "
                    "only a converted folder, so that nothing else is lost. Choose another folder."
                )
    if vocab.strip() and not Path(vocab.strip()).expanduser().is_file():
        problems["vocab"] = f"{Path(vocab.strip()).expanduser()}: no such vocabulary file."
    if config.strip() and not Path(config.strip()).expanduser().exists():
        problems["config"] = f"{Path(config.strip()).expanduser()}: no such config file."
    return problems


class ConvertUI:
    """Checkpoint and output pickers, vocabulary, config, dtype and overwrite; Convert and Cancel; progress
    in tensors, bytes and time left; then the summary, or the error, and links to the next notebooks."""

    def __init__(
        self,
        checkpoint: str | Path = "",
        output: str | Path = "",
        *,
        vocab: str = "",
        dtype: str = "auto",
        workspace: Workspace | None = None,
    ) -> None:
        self.workspace = workspace
        places = standard_places(workspace.root if workspace else None)
        # widgets
        self.checkpoint_picker = PathPicker(checkpoint, description="Checkpoint", kind="checkpoint", places=places)
        self.checkpoint = self.checkpoint_picker.path
        self.checkpoint_message = W.HTML()
        self.output_picker = PathPicker(output, description="Output folder", kind="output", places=places)
        self.output = self.output_picker.path
        self.output_message = W.HTML()
        hint = "default: vocab.txt beside the checkpoint, else the standard one"
        self.vocab = W.Text(vocab, description="Vocabulary", placeholder=hint, layout=WIDE, style=DESCRIPTION)
        self.vocab_message = W.HTML()
        self.config = W.Text(
            "", description="Config", placeholder="optional config.json, checked against the weights", layout=WIDE,
            style=DESCRIPTION,
        )  # fmt: skip
        self.config_message = W.HTML()
        self.dtype = W.Dropdown(options=DTYPE_CHOICES, value=dtype, description="dtype", style=DESCRIPTION)
        self.overwrite = W.Checkbox(False, description="Overwrite a non-empty output folder", indent=False)
        self.drop_unused = W.Checkbox(False, description="Drop unused source keys", indent=False)
        self._fields = (  # the inputs, which the result belongs to and which a conversion locks
            self.checkpoint, self.output, self.vocab, self.config, self.overwrite, self.dtype, self.drop_unused,
        )  # fmt: skip
        self.convert_button = W.Button(description="Convert", button_style="primary", icon="play")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.header = W.HTML(workspace.header_html() if workspace else "")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Progress", style=DESCRIPTION)
        self.progress_text = W.HTML()
        self.status = W.HTML()
        self.next_steps = LinkedHTML()
        self.summary: ConversionSummary | None = None
        self.error: BaseException | None = None
        self._result_for: tuple | None = None  # the inputs the shown result or error came from
        self.task = BackgroundTask(self._on_progress, self._show_busy)  # busy until it has shown its result
        self._started = 0.0
        # connections
        self._suggested_output = self.output.value  # replaced as the checkpoint changes, until the user types one
        self.overwrite.value = self._overwrite_by_default()
        self.checkpoint.observe(self._on_checkpoint_change, names="value")
        for field in (self.checkpoint, self.output):  # after the output follows a new checkpoint, before validating
            field.observe(self._on_target_change, names="value")
        for field in self._fields:
            field.observe(self._on_input_change, names="value")
        self.convert_button.on_click(self._on_convert_click)
        self.cancel_button.on_click(self._on_cancel_click)
        self._validate()

    @property
    def running(self) -> bool:
        return self.task.running

    def wait(self, timeout: float | None = None) -> ConversionSummary | None:
        """Block until the running conversion ends; the summary, or ``None`` after an error or Cancel."""
        self.task.wait(timeout)
        return self.summary

    @property
    def converted_folder(self) -> Path | None:
        """The folder these inputs were converted into: just now, or before (as the work folder remembers)."""
        return self.summary.output_dir if self.summary else self._remembered_output()

    def outcome(self) -> str:
        """What the widget shows, as plain text: the summary, the error, or why Convert cannot run."""
        if self.summary is not None:
            return in_widget_terms(self.summary.to_text())
        if self.error is not None:
            return failure_text(self.error)
        if self._result_for is not None:  # cancelled
            return "Cancelled: nothing was written."
        before = self._remembered_output()
        if before is not None:
            return f"{self.checkpoint.value.strip()} was converted into {before} before."
        problems = self._validate()
        return "\n".join(problems.values()) or "Not converted yet: click Convert."

    # handlers
    def _on_checkpoint_change(self, change=None) -> None:
        """With a work folder: remember a checkpoint that can be read, and move the output to its folder
        (converted before, else a new one) unless the user typed an output of their own."""
        checkpoint = Path(self.checkpoint.value.strip()).expanduser()
        if self.workspace is None or checkpoint_problem(self.checkpoint.value):
            return
        self.workspace.remember(checkpoint)
        if self.output.value == self._suggested_output:
            self._suggested_output = self.output.value = str(self.workspace.output_for(checkpoint))

    def _on_target_change(self, change=None) -> None:
        """A new checkpoint or output folder: Overwrite goes back to its default for them, so that a tick given
        for one (the demo's, say) never replaces another."""
        if not self.task.busy:
            self.overwrite.value = self._overwrite_by_default()

    def _overwrite_by_default(self) -> bool:
        """Whether Overwrite starts ticked: only for the embedded demo converting into the folder suggested for it."""
        if self.workspace is None or checkpoint_problem(self.checkpoint.value):
            return False
        demo = self.workspace.is_demo(Path(self.checkpoint.value.strip()).expanduser())
        return demo and self.output.value == self._suggested_output

    def _on_input_change(self, change=None) -> None:
        if self.task.busy:
            return
        if self._result_for is not None and self._inputs() != self._result_for:
            self._clear_result()
        self._validate()

    def _on_convert_click(self, button=None) -> None:
        if self.task.busy or self._validate() or self.convert_button.disabled:  # a click queued before it was disabled
            return
        self._clear_result()
        self._show_stage(LOADING)
        inputs = self._inputs()
        self.task.start(partial(self._convert, inputs), partial(self._on_convert_end, inputs))

    def _on_cancel_click(self, button=None) -> None:
        if not self.task.cancel():  # the conversion ended as the click arrived: its result stays
            return
        self.cancel_button.disabled = True
        self.status.value = "<i>Cancelling…</i>"

    def _on_progress(self, progress: Progress) -> None:
        if self.task.cancel_requested:  # an event already past the cancel check: "Cancelling…" stays
            return
        self._show_stage(progress.stage)
        if progress.stage != WRITING:
            return
        if progress.index == 1:  # the time left counts from the first tensor, after reading and planning
            self._started = time.monotonic()
        elapsed = time.monotonic() - self._started
        left = elapsed * (1 - progress.fraction) / progress.fraction if progress.fraction else 0.0
        self.progress.value = progress.fraction
        counts = (
            f"{progress.index} / {progress.count} tensors",
            f"{human_size(progress.done)} of {human_size(progress.total)}",
            f"about {human_duration(left)} left",
        )
        self.progress_text.value = " · ".join(f"<span style='white-space:nowrap'>{part}</span>" for part in counts)

    def _show_stage(self, stage: str) -> None:
        """Say what the conversion is doing now (each stage once)."""
        said = f"<i>{html.escape(stage[:1].upper() + stage[1:])}…</i>"
        if self.status.value != said:
            self.status.value = said

    # the work, in the conversion's thread
    def _convert(self, inputs: tuple, progress: OnProgress) -> ConversionSummary:
        from chclip_convert.conversion.pipeline import convert_checkpoint  # the first takes seconds: LOADING
        from chclip_convert.verification.model_outputs import quiet_transformers

        quiet_transformers()  # transformers is imported here, not when the page loads
        checkpoint, output, vocab, config, dtype, overwrite, drop_unused = inputs
        return convert_checkpoint(
            checkpoint, output, dtype=dtype, vocab=vocab or None, config=config or None, overwrite=overwrite,
            strict=not drop_unused, progress=progress,
        )  # fmt: skip

    def _on_convert_end(self, inputs: tuple, task: BackgroundTask) -> None:
        if task.cancelled:
            self._show_failure(None, "Cancelled: nothing was written, and the output folder is as it was.")
        elif task.error is not None:  # the converter's refusal, or anything unexpected
            self._show_failure(task.error, failure_text(task.error))
        else:
            self._show_success(task.result)
        self._result_for = inputs

    def _show_success(self, summary: ConversionSummary) -> None:
        self.summary = summary
        if self.workspace is not None:
            self.workspace.remember(summary.source, summary.output_dir)
        self.progress.value, self.progress.bar_style = 1.0, "success"
        self.progress_text.value = f"done in {human_duration(summary.seconds)}"
        self.status.value = cjk_html(in_widget_terms(summary.to_html()))
        self.next_steps.value = next_steps_html(summary.source, summary.output_dir)

    def _show_failure(self, error: BaseException | None, message: str) -> None:
        self.error, self.progress_text.value = error, ""
        self.progress.bar_style = "danger" if error is not None else "warning"
        self.status.value = message_html(message, error=error is not None)

    def _clear_result(self) -> None:
        self.summary, self.error, self._result_for = None, None, None
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.progress_text.value = self.status.value = self.next_steps.value = ""

    def _show_busy(self, busy: bool) -> None:
        if busy:  # an open folder listing could change a path mid-run
            self.checkpoint_picker.browse.value = self.output_picker.browse.value = False
        for field in self._fields:
            field.disabled = busy
        self.checkpoint_picker.browse.disabled = self.output_picker.browse.disabled = busy
        self.cancel_button.disabled = not busy
        self.convert_button.disabled = busy
        if not busy:
            self._validate()

    def _inputs(self) -> tuple:
        return (
            self.checkpoint.value.strip(), self.output.value.strip(), self.vocab.value.strip(),
            self.config.value.strip(), self.dtype.value, self.overwrite.value, self.drop_unused.value,
        )  # fmt: skip

    def _validate(self) -> dict[str, str]:
        """Show each input's problem under it, and enable Convert only when there is none. The folder a
        result was just written to is that result, not a problem."""
        problems = validate_inputs(
            self.checkpoint.value, self.output.value, self.vocab.value, self.overwrite.value, self.config.value
        )
        note = ""
        remembered = self._remembered_output()  # reads the settings and the folder's report: once per check
        if "output" in problems and not self.overwrite.value:
            done_here = self.summary is not None and self._result_for == self._inputs()
            if done_here or remembered:
                del problems["output"]
                note = "Converted into this folder" + ("" if done_here else " before") + ": tick Overwrite to redo it."
        if self.summary is None and not self.task.busy:  # a folder converted before: offer its next steps
            self.next_steps.value = (
                next_steps_html(Path(self.checkpoint.value.strip()), remembered) if remembered else ""
            )
        for name in ("checkpoint", "output", "vocab", "config"):
            message = problems.get(name)
            getattr(self, f"{name}_message").value = message_html(message, error=True) if message else ""
        if note:
            self.output_message.value = message_html(note, error=False)
        self.convert_button.disabled = bool(problems) or bool(note) or self.task.busy
        return problems

    def _remembered_output(self) -> Path | None:
        """The output folder, if the work folder's settings say it holds this checkpoint's conversion."""
        if self.workspace is None or not self.checkpoint.value.strip():
            return None
        folder = self.workspace.converted_folder(Path(self.checkpoint.value.strip()).expanduser())
        same = folder is not None and folder == Path(self.output.value.strip()).expanduser().absolute()
        return folder if same else None

    # layout
    @property
    def widget(self) -> W.VBox:
        paths = [self.checkpoint_picker.widget, self.checkpoint_message, self.output_picker.widget, self.output_message]
        files = [self.vocab, self.vocab_message, self.config, self.config_message]
        options = wrapping_row([self.dtype, self.overwrite, self.drop_unused])
        run = wrapping_row([self.convert_button, self.cancel_button, self.progress, self.progress_text])
        parts = [self.header, *paths, *files, options, run, self.status, self.next_steps.widget]
        return Panel(parts, name="The converter")


def next_steps_html(checkpoint: Path, folder: Path) -> str:
    """Links to the notebooks that take the folder next (they find it in the work folder's settings), and the
    same steps on the command line."""
    links = " · ".join(f"{notebook_link(name)} ({what})" for name, what in NEXT_STEPS.items())
    # quoted for the shell; a line breaks after a slash or between words, never at a hyphen inside a name
    words = ["chclip-convert", "verify", *(shlex.quote(str(path)) for path in (checkpoint, folder))]
    command = " ".join("<wbr>".join(map(_unbroken, re.split(r"(?<=/)", word))) for word in words)
    return cjk_html(f"<b>Next:</b> {links}<br>or in a terminal: <code>{command}</code>")


def _unbroken(text: str) -> str:
    """``text`` as HTML that never breaks across lines."""
    return f"<span style='white-space:nowrap'>{html.escape(text)}</span>"


def failure_text(error: Exception) -> str:
    """A :class:`ConversionError`'s own message (it names the file, and what to change in the widgets' terms);
    anything else with its type, as a bug."""
    if isinstance(error, ConversionError):
        return in_widget_terms(str(error))
    return f"Unexpected error ({type(error).__name__}): {error}"


def message_html(text: str, *, error: bool) -> str:
    """``text`` as a message under a field, red for an ``error``, in a font for any Chinese of it (a path's)."""
    colour = "#b71c1c" if error else "#1b5e20"
    return cjk_html(f"<pre style='color:{colour};white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>")

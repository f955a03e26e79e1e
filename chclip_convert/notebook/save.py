"""Writing on request: a new conversion of the checkpoint in another dtype or with shards (:class:`SaveUI`), and
the folder back in the original format (:class:`ReverseUI`). Nothing is written until the button is clicked,
and an existing output is replaced only with Overwrite ticked, once the new one is complete.
"""

from __future__ import annotations

import html
import sys
from pathlib import Path

import ipywidgets as W

from chclip_convert.conversion.pipeline import convert_checkpoint
from chclip_convert.conversion.reverse import ReverseSummary, reverse_folder
from chclip_convert.conversion.summary import ConversionSummary
from chclip_convert.errors import ConversionError
from chclip_convert.files.output import check_output_file
from chclip_convert.files.safetensors_writer import INDEX_FILE, shard_size_bytes
from chclip_convert.names import DTYPE_CHOICES, WEIGHTS_SUFFIX
from chclip_convert.notebook.converter import failure_text, message_html, validate_inputs
from chclip_convert.notebook.elements import Panel, wrapping_row
from chclip_convert.notebook.fonts import cjk_html
from chclip_convert.notebook.picker import DESCRIPTION, WIDE, PathPicker
from chclip_convert.progress import Progress
from chclip_convert.units import human_size

NO_SHARDING = "no sharding"
SHARD_SIZES = (NO_SHARDING, "5GB", "2GB", "1GB", "500MB")


def shard_bytes(choice: str) -> int:
    """The shard size a choice means: every tensor in one file for "no sharding", else the size as convert
    reads it (``"2GB"``, ``"500MB"``, bytes). Raises the converter's :class:`ConversionError` for anything else."""
    return sys.maxsize if choice.strip() == NO_SHARDING else shard_size_bytes(choice.strip())


def describe_files(folder: Path, files: list[str]) -> str:
    """The files of a written folder in one phrase: "3 weight shards + index, 7 other files, 612.4 MB"."""
    weights = [name for name in files if name.endswith(WEIGHTS_SUFFIX)]
    others = len(files) - len(weights) - (INDEX_FILE in files)
    if INDEX_FILE in files:
        kind = f"{len(weights)} weight shard{'s' * (len(weights) != 1)} + index"
    else:
        kind = f"{len(weights)} weight file{'s' * (len(weights) != 1)}"
    size = sum((folder / name).stat().st_size for name in files)
    return f"{kind}, {others} other file{'s' * (others != 1)}, {human_size(size)}"


def _files_list(folder: Path, files: list[str]) -> str:
    rows = "".join(
        f"<li><code>{html.escape(name)}</code> {human_size((folder / name).stat().st_size)}</li>" for name in files
    )
    return cjk_html(f"<ul style='margin:0'>{rows}</ul>")


def _problems_html(problems: dict[str, str]) -> str:
    return "".join(message_html(message, error=True) for message in problems.values())


class SaveUI:
    """Folder, dtype, shard size and overwrite, and what the model card tells the Hub (licence, base model); a Save
    button writing a new conversion of ``checkpoint``; a progress bar; the result as a count and a total size,
    with the file names in a collapsed list."""

    def __init__(
        self, checkpoint: str | Path, folder: str | Path, *, dtype: str = "auto", shard_size: str = NO_SHARDING
    ) -> None:
        # widgets
        self.checkpoint = Path(checkpoint)
        self.folder_picker = PathPicker(folder, description="Folder", kind="output")
        self.folder = self.folder_picker.path
        self.dtype = W.Dropdown(options=DTYPE_CHOICES, value=dtype, description="dtype", style=DESCRIPTION)
        self.shard_size = W.Combobox(
            options=SHARD_SIZES,
            value=shard_size,
            description="Shard size",
            placeholder="no sharding, 2GB, 500MB, …",
            ensure_option=False,
            style=DESCRIPTION,
        )
        self.overwrite = W.Checkbox(False, description="Overwrite a non-empty folder", indent=False)
        self.license = W.Text("", description="Licence", placeholder="for the Hub's card: apache-2.0, mit, …",
                              style=DESCRIPTION)  # fmt: skip
        self.base_model = W.Text("", description="Base model", placeholder="fine-tuned from, on the Hub: OFA-Sys/…",
                                 style=DESCRIPTION)  # fmt: skip
        self.message = W.HTML()
        self.save_button = W.Button(description="Save", button_style="primary", icon="save")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, description="Writing", style=DESCRIPTION)
        self.result = W.HTML()
        self.files = W.Accordion(children=[W.HTML()], titles=("files",), selected_index=None)
        self.files.layout.display = "none"
        self.summary: ConversionSummary | None = None
        self.error: Exception | None = None
        # connections
        for field in (self.folder, self.dtype, self.shard_size, self.overwrite, self.license, self.base_model):
            field.observe(self._on_field_change, names="value")
        self.save_button.on_click(self._on_save_click)
        self._validate()

    # handlers
    def _on_field_change(self, change=None) -> None:
        self.summary, self.error = None, None
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.result.value, self.files.children[0].value, self.files.layout.display = "", "", "none"
        self._validate()

    def _on_save_click(self, button=None) -> None:
        if self._validate() or self.save_button.disabled:  # a click queued before it was disabled
            return
        self.save_button.disabled = True
        self.progress.value, self.progress.bar_style = 0.0, ""
        self.result.value = "<i>Saving…</i>"
        try:
            self.summary = convert_checkpoint(
                self.checkpoint,
                self.folder.value.strip(),
                dtype=self.dtype.value,
                max_shard_size=shard_bytes(self.shard_size.value),
                overwrite=self.overwrite.value,
                progress=self._on_progress,
                license=self.license.value.strip() or None,
                base_model=self.base_model.value.strip() or None,
            )
        except Exception as error:  # the converter's refusal, or anything unexpected: shown, never left "Saving…"
            self.error, self.progress.bar_style = error, "danger"
            self.result.value = message_html(failure_text(error), error=True)
        else:
            self._show(self.summary)
        finally:
            self._validate()

    def _on_progress(self, progress: Progress) -> None:
        self.progress.value = progress.fraction

    def _show(self, summary: ConversionSummary) -> None:
        folder, files = summary.output_dir, list(summary.files)
        self.progress.value, self.progress.bar_style = 1.0, "success"
        self.result.value = cjk_html(
            f"Saved <code>{html.escape(str(folder))}</code>: {describe_files(folder, files)} "
            f"({html.escape(', '.join(f'{n} {d}' for d, n in summary.dtypes_written.items()))} tensors)"
        )
        self.files.children[0].value = _files_list(folder, files)
        self.files.layout.display = None

    def _validate(self) -> dict[str, str]:
        found = validate_inputs(str(self.checkpoint), self.folder.value, "", self.overwrite.value)
        problems = {key: message for key, message in found.items() if key in ("checkpoint", "output")}
        try:
            shard_bytes(self.shard_size.value)
        except ConversionError:
            problems["shard_size"] = (
                f"Shard size {self.shard_size.value.strip()!r}: write a size such as 2GB or 500MB (units KB, MB, GB, "
                f"TB), a number of bytes, or {NO_SHARDING!r}."
            )
        folder = Path(self.folder.value.strip()).expanduser()
        saved_here = self.summary is not None and folder == self.summary.output_dir
        if saved_here and set(problems) == {"output"} and not self.overwrite.value:  # the result, not a problem
            self.message.value = message_html("Saved here: tick Overwrite to save it again.", error=False)
            self.save_button.disabled = True
            return {}
        self.message.value = _problems_html(problems)
        self.save_button.disabled = bool(problems)
        return problems

    # layout
    @property
    def widget(self) -> W.VBox:
        options = wrapping_row([self.dtype, self.shard_size, self.overwrite])
        card = wrapping_row([self.license, self.base_model])
        run = wrapping_row([self.save_button, self.progress])
        parts = [self.folder_picker.widget, options, card, self.message, run, self.result, self.files]
        return Panel(parts, name="Save")


class ReverseUI:
    """A ``.pt`` path and overwrite; a button writing ``folder`` back in the original format; the result."""

    def __init__(self, folder: str | Path, output: str | Path) -> None:
        # widgets
        self.source = Path(folder)
        self.output = W.Text(str(output), description="Checkpoint", layout=WIDE, style=DESCRIPTION)
        self.overwrite = W.Checkbox(False, description="Overwrite an existing file", indent=False)
        self.message = W.HTML()
        self.reverse_button = W.Button(description="Write original .pt", button_style="primary", icon="undo")
        self.result = W.HTML()
        self.summary: ReverseSummary | None = None
        self.error: Exception | None = None
        # connections
        for field in (self.output, self.overwrite):
            field.observe(self._on_field_change, names="value")
        self.reverse_button.on_click(self._on_reverse_click)
        self._validate()

    # handlers
    def _on_field_change(self, change=None) -> None:
        self.summary, self.error, self.result.value = None, None, ""
        self._validate()

    def _on_reverse_click(self, button=None) -> None:
        if self._validate() or self.reverse_button.disabled:  # a click queued before it was disabled
            return
        self.reverse_button.disabled = True
        self.result.value = "<i>Writing…</i>"
        try:
            self.summary = reverse_folder(self.source, self.output.value.strip(), overwrite=self.overwrite.value)
        except Exception as error:  # as in SaveUI
            self.error = error
            self.result.value = message_html(failure_text(error), error=True)
        else:
            size = human_size(self.summary.output.stat().st_size)
            self.result.value = message_html(f"{self.summary.to_text()}\n  size:       {size}", error=False)
        finally:
            self._validate()

    def _validate(self) -> dict[str, str]:
        problems = {}
        target = Path(self.output.value.strip()).expanduser()
        if not self.output.value.strip():
            problems["output"] = "Enter the path of the .pt file to write."
        elif self.summary is not None and target == self.summary.output and not self.overwrite.value:
            self.message.value = message_html("Written here: tick Overwrite to write it again.", error=False)
            self.reverse_button.disabled = True
            return {}
        elif target.exists() and not self.overwrite.value:
            problems["output"] = "This file exists: tick Overwrite to replace it, or choose another name."
        else:
            try:
                check_output_file(target, input_folder=self.source, overwrite=self.overwrite.value)
            except ConversionError as error:
                problems["output"] = error.message
        self.message.value = _problems_html(problems)
        self.reverse_button.disabled = bool(problems)
        return problems

    # layout
    @property
    def widget(self) -> W.VBox:
        parts = [wrapping_row([self.output, self.overwrite]), self.message, self.reverse_button, self.result]
        return Panel(parts, name="Back to the original format")

"""ipywidgets front ends. Each UI is a small class in fixed sections — widgets, connections, handlers
(``_on_<widget>_<event>``), layout (``.widget``) — and only a view: the work is done by the same
functions the command line uses. Results go into widget state (``.value``), so a notebook saved after
running shows them, and tests drive the UI by setting values and clicking, without a browser.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import ipywidgets as W
import torch

from ..checkpoint import check_checkpoint_path
from ..constants import DTYPE_CHOICES
from ..convert import implied_targets
from ..errors import ConversionError
from ..output import check_output_dir
from ..pipeline import convert_checkpoint
from ..summary import ConversionSummary
from ..weight_stats import TensorComparison
from .key_grid import COLUMNS, STATUS_COLOURS, KeyInspectorUI, row_cells

WIDE = W.Layout(width="640px")
DESCRIPTION = {"description_width": "110px"}

__all__ = ["ConvertUI", "HistogramUI", "KeyInspectorUI", "rows_to_html", "validate_inputs"]


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

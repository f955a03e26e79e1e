"""Pick one tensor by searching its name (transformers' or the original one it is made from); see its values,
source and converted, as overlaid histograms.

Only the chosen tensor is read, from each side: the source through the memory-mapped checkpoint and the
mapping step that makes it (a q slice of the fused attention weight), the converted one from its safetensors
file. Nothing else of either model is held."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from chclip_convert.changes.weight_stats import TensorComparison, compare_tensor
from chclip_convert.conversion.inspection import name_filter
from chclip_convert.conversion.views import ConvertedFolder, MappedCheckpoint
from chclip_convert.notebook.elements import Panel, nothing_found
from chclip_convert.notebook.picker import WIDE
from chclip_convert.tensor_stats import COMPARED, one_thread


class HistogramUI:
    """A search field narrows the list of tensors; the chosen one is drawn (SVG) with what differs; a search
    that finds nothing empties the list and clears the drawing."""

    def __init__(
        self,
        checkpoint: str | Path,
        folder: str | Path,
        comparisons: list[TensorComparison] | None = None,
        *,
        initial: str | None = None,
    ) -> None:
        # widgets
        self.source = MappedCheckpoint(checkpoint)
        self.converted = ConvertedFolder(folder)
        # each transformers name with the original name(s) it is made from, which the search also finds it by
        self.sources = {target: step.inputs for step in self.source.steps for target in step.outputs}
        self.names = sorted(set(self.sources) | set(self.converted.names()))
        self.known = {c.target: c for c in comparisons or []}
        flagged = [c.target for c in self.known.values() if not c.agrees]
        self.search = W.Text("", description="search", placeholder="parts of a name, e.g. layers.3 q_proj", layout=WIDE)
        self.tensor = W.Select(options=self.names, rows=8, description="tensor", layout=WIDE)
        self.tensor.value = initial or (flagged or self.names)[0]
        self.count = W.HTML()
        self.caption = W.HTML()
        self.image = W.Image(format="svg+xml", layout=W.Layout(width="600px"))
        self.comparison: TensorComparison | None = None
        # connections
        self.search.observe(self._on_search_change, names="value")
        self.tensor.observe(self._on_tensor_change, names="value")
        self._on_search_change()
        self._on_tensor_change()

    def matching(self, text: str) -> list[str]:
        """The names, in order, that the name filter ``text`` finds
        (:func:`chclip_convert.conversion.inspection.name_filter`), by their own or their source's name."""
        return name_filter(text).filter(self.names, lambda name: (name, *self.sources.get(name, ())))

    # handlers
    def _on_search_change(self, change=None) -> None:
        found = self.matching(self.search.value)
        if list(self.tensor.options) != found:
            self.tensor.options = found  # keeps the value if it still matches, else takes the first
        if found and self.tensor.value is None:  # after a search that found nothing, Select takes none
            self.tensor.value = found[0]
        total = len(self.names)
        if found:
            self.count.value = f"{len(found)} of {total} tensors"
        else:
            self.count.value = nothing_found("tensor", self.search.value, total)
            self._clear()

    def _on_tensor_change(self, change=None) -> None:
        name = self.tensor.value
        if name is None:
            self._clear()
            return
        with one_thread():
            self._draw(name, *self._read(name))

    def _clear(self) -> None:
        """No tensor chosen: no drawing, no caption, no comparison."""
        self.comparison, self.image.value, self.caption.value = None, b"", ""

    def _read(self, name: str):
        # the one source tensor, through its step (a q slice of the fused attention weight)
        piece = self.source.implied(name)
        converted = self.converted.read(name) if name in self.converted.names() else None
        return self.source.step(name), piece, converted

    def _draw(self, name: str, step, source, converted) -> None:
        from matplotlib.figure import Figure

        from chclip_convert.notebook.plotting.figures import HISTOGRAM_SIZE, svg
        from chclip_convert.notebook.plotting.weights import plot_histogram

        # The comparison the notebook already made, if it was given; else made here, from the tensors just read.
        self.comparison = self.known.get(name) or compare_tensor(name, step, source, converted)
        figure = Figure(figsize=HISTOGRAM_SIZE)
        plot_histogram(figure.subplots(), source, converted, name)
        figure.tight_layout()
        self.image.value = svg(figure)
        self.caption.value = f"<code>{html.escape(name)}</code>: {_verdict(self.comparison)}"

    # layout
    @property
    def widget(self) -> W.VBox:
        box = Panel(
            [self.search, self.count, self.tensor, self.caption, self.image], name="The histogram of one tensor"
        )
        box.add_class("chclip-histogram")  # the handle browser tests find the picker by
        return box


def _verdict(comparison: TensorComparison) -> str:
    if comparison.agrees:
        return "identical values"
    if comparison.kind in COMPARED:
        what = f"max |converted − source| {comparison.max_abs_diff:.3g}, norm ratio {comparison.norm_ratio:.4g}"
    else:
        what = comparison.kind_text
    return f"<b style='color:#b71c1c'>values differ ({html.escape(comparison.status)}): {html.escape(what)}</b>"

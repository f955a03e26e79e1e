"""Pick one tensor by searching its name; see its values, source and converted, as overlaid histograms.

Only the chosen tensor is read, from each side: the source through the memory-mapped checkpoint and the
mapping step that makes it (a q slice of the fused attention weight), the converted one from its safetensors
file. Nothing else of either model is held."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from chclip_convert.changes.weight_stats import TensorComparison, compare_tensor
from chclip_convert.conversion.views import ConvertedFolder, MappedCheckpoint
from chclip_convert.notebook.picker import WIDE
from chclip_convert.tensor_stats import COMPARED, one_thread


class HistogramUI:
    """A search field narrows the list of tensors; the chosen one is drawn (SVG) with what differs."""

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
        targets = {target for step in self.source.steps for target in step.outputs}
        self.names = sorted(targets | set(self.converted.names()))
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
        """The names holding every word of ``text`` (any case), in order."""
        words = text.lower().split()
        return [name for name in self.names if all(word in name.lower() for word in words)]

    # handlers
    def _on_search_change(self, change=None) -> None:
        found = self.matching(self.search.value)
        if list(self.tensor.options) != found:
            self.tensor.options = found  # keeps the value if it still matches, else takes the first
        self.count.value = f"{len(found)} of {len(self.names)} tensors"

    def _on_tensor_change(self, change=None) -> None:
        name = self.tensor.value
        if name is None:
            return
        with one_thread():
            self._draw(name, *self._read(name))

    def _read(self, name: str):
        # the one source tensor, through its step (a q slice of the fused attention weight)
        piece = self.source.implied(name)
        converted = self.converted.read(name) if name in self.converted.names() else None
        return self.source.step(name), piece, converted

    def _draw(self, name: str, step, source, converted) -> None:
        from matplotlib.figure import Figure

        from chclip_convert.notebook.plotting.figures import svg
        from chclip_convert.notebook.plotting.weights import plot_histogram

        # The comparison the notebook already made, if it was given; else made here, from the tensors just read.
        self.comparison = self.known.get(name) or compare_tensor(name, step, source, converted)
        figure = Figure(figsize=(6.25, 3))
        plot_histogram(figure.subplots(), source, converted, name)
        figure.tight_layout()
        self.image.value = svg(figure)
        self.caption.value = f"<code>{html.escape(name)}</code>: {_verdict(self.comparison)}"

    # layout
    @property
    def widget(self) -> W.VBox:
        return W.VBox([self.search, self.count, self.tensor, self.caption, self.image])


def _verdict(comparison: TensorComparison) -> str:
    if comparison.agrees:
        return "identical values"
    if comparison.kind in COMPARED:
        what = f"max |converted − source| {comparison.max_abs_diff:.3g}, norm ratio {comparison.norm_ratio:.4g}"
    else:
        what = comparison.kind_text
    return f"<b style='color:#b71c1c'>values differ ({html.escape(comparison.status)}): {html.escape(what)}</b>"

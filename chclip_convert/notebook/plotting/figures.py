"""Figures that are widgets: with ``%matplotlib widget`` (ipympl) a figure zooms, pans and follows the pointer
in JupyterLab and Voila; under any other backend it is a sharp static image. Either way it is shown inside a
box, whose text form (what nbval compares) is the same on every run and machine."""

from __future__ import annotations

import html
import io

import ipywidgets as W
from matplotlib.figure import Figure

from chclip_convert.changes.weight_stats import TensorComparison
from chclip_convert.notebook.plotting.weights import Hover, draw_comparisons


def is_interactive() -> bool:
    """Whether matplotlib draws into ipympl's widget canvas (``%matplotlib widget``)."""
    import matplotlib

    return "ipympl" in matplotlib.get_backend() or matplotlib.get_backend().endswith("widget")


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on ipympl's canvas when it is the backend (not shown until :func:`figure_widget`), else a
    plain figure that pyplot never displays by itself."""
    if not is_interactive():
        return Figure(figsize=figsize)
    import matplotlib.pyplot as plt

    with plt.ioff():
        figure = plt.figure(figsize=figsize)
    figure.canvas.header_visible = False
    figure.canvas.toolbar_position = "left"  # on top, it covers the first title
    return figure


def figure_widget(figure: Figure) -> W.Box:
    """The figure in a box: its live canvas, or an SVG image of it (sharp at any size)."""
    if isinstance(figure.canvas, W.DOMWidget):
        return W.VBox([figure.canvas])
    width = f"{int(figure.get_figwidth() * 96)}px"
    return W.VBox([W.Image(value=svg(figure), format="svg+xml", layout=W.Layout(width=width))])


def svg(figure: Figure) -> bytes:
    """The figure as an SVG image: sharp at any size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


def comparison_view(comparisons: list[TensorComparison], figsize: tuple[float, float] = (9.5, 9)) -> W.Box:
    """Every tensor's difference and norm ratio, per layer of each tower and outside the layers, as one
    figure widget, narrow enough for JupyterLab beside its file browser. Interactive, the tensor under the
    pointer is named on the figure, and the last one named stays in a line above it (``view.hover`` keeps the
    handler alive: matplotlib holds its callbacks weakly)."""
    figure = new_figure(figsize)
    hover: Hover = draw_comparisons(figure, comparisons)
    view = figure_widget(figure)
    if is_interactive():
        label = W.HTML(HOVER_HINT, layout=W.Layout(min_height="2.6em"))
        hover.listeners.append(lambda text: text and setattr(label, "value", _hover_html(text)))
        view.children = (label, *view.children)
    view.hover = hover
    return view


HOVER_HINT = "<i>Hover over a point to name its tensor.</i>"


def _hover_html(text: str) -> str:
    name, _, numbers = text.partition("\n")
    return f"<code class='hovered-tensor'>{html.escape(name)}</code> {html.escape(numbers)}"

"""Figures that are widgets: with ``%matplotlib widget`` (ipympl) a figure zooms, pans and follows the pointer
in JupyterLab and Voila; under any other backend it is a sharp static image. Either way it is shown inside a
box, whose text form (what nbval compares) is the same on every run and machine."""

from __future__ import annotations

import html
import io

import ipywidgets as W
from matplotlib.figure import Figure
from matplotlib.text import Text

from chclip_convert.changes.weight_stats import TensorComparison
from chclip_convert.notebook.elements import Panel
from chclip_convert.notebook.plotting.weights import Hover, draw_comparisons, renderer_of

# Sizes in inches, for JupyterLab's notebook area beside its file browser at 1400 × 900 px (about 1000 px wide, of
# which the output prompt takes 64, and 700 px tall in view): ipympl shows 100 px an inch and its toolbar (40 px) on
# the left, an SVG image shows 96 px an inch. Every figure is at most 880 × 640 px.
WIDTH = 8.8
COMPARISON_SIZE = (WIDTH, 6.4)  # 03's statistics: two rows of three axes, the legends on the right
DIFF_SIZE = (WIDTH, 6.2)  # 02 and 05: the comparison of two checkpoints (diff_view)
SIMILARITY_SIZE = (WIDTH, 3.2)  # 04's photo and its two heatmaps (weights.draw_similarities)
HISTOGRAM_SIZE = (WIDTH * 0.75, 3.0)  # 03's histogram of one tensor (histogram.HistogramUI)
RUN_HEATMAPS_SIZE = (WIDTH, 6.4)  # 05's four heatmaps (run_view.heatmap_view): 16 rows each for ViT-B-16
RUN_CURVES_SIZE = (WIDTH, 3.4)  # 05's curves (run_view.curves_view)
LATENCY_SIZE = (WIDTH, 3.4)  # 06's latency of each tower (latency.draw_latency)
MAX_PIXELS = (950, 650)  # what the notebook area shows at 100 % zoom without scrolling


def is_interactive() -> bool:
    """Whether matplotlib draws into ipympl's widget canvas (``%matplotlib widget``)."""
    import matplotlib

    return "ipympl" in matplotlib.get_backend() or matplotlib.get_backend().endswith("widget")


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on ipympl's canvas when it is the backend (not shown until :func:`figure_widget`), its left strip
    kept for the toolbar, else a plain figure that pyplot never displays by itself."""
    if not is_interactive():
        return Figure(figsize=figsize)
    import matplotlib.pyplot as plt

    with plt.ioff():
        figure = plt.figure(figsize=figsize)
    figure.canvas.header_visible = False
    figure.canvas.toolbar_position = "left"  # on top, it covers the first title
    keep_toolbar_strip(figure)
    return figure


TOOLBAR_PX = 44  # ipympl's toolbar, 38 px wide, and a little room


def keep_toolbar_strip(figure: Figure) -> None:
    """Lay ``figure`` out by constrained layout clear of the strip down its left edge that ipympl's toolbar covers
    (the toolbar floats over the canvas): no axes nor name is ever hidden under it."""
    strip = TOOLBAR_PX / (figure.get_figwidth() * figure.dpi)
    figure.set_layout_engine("constrained", rect=(strip, 0, 1 - strip, 1))


def figure_widget(figure: Figure) -> W.Box:
    """The figure in a box: its live canvas, or an SVG image of it (sharp at any size, and narrowed to fit a
    narrower output area rather than overflow it)."""
    if isinstance(figure.canvas, W.DOMWidget):
        return Panel([figure.canvas], name="The figure")
    width = f"{int(figure.get_figwidth() * 96)}px"
    image = W.Image(value=svg(figure), format="svg+xml", layout=W.Layout(width=width, max_width="100%"))
    return Panel([image], name="The figure")


def svg(figure: Figure) -> bytes:
    """The figure as an SVG image: sharp at any size."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


def comparison_view(comparisons: list[TensorComparison], figsize: tuple[float, float] = COMPARISON_SIZE) -> W.Box:
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


def visible_texts(figure: Figure) -> list[Text]:
    """Every text ``figure`` draws, after drawing it: titles, labels, legends, annotations shown, and the tick
    labels in view on each axis shown (matplotlib keeps others, unused, beyond the view)."""
    renderer_of(figure)
    figure.canvas.draw()
    axes = [axis for ax in figure.axes for axis in (ax.xaxis, ax.yaxis)]
    tick_labels = {id(label) for axis in axes for tick in _ticks(axis) for label in (tick.label1, tick.label2)}
    texts = [text for text in figure.findobj(Text) if id(text) not in tick_labels]
    for axis in axes:
        if axis.axes.axison and axis.get_visible():
            low, high = sorted(axis.get_view_interval())
            shown = [
                tick
                for tick in _ticks(axis)
                if low - 1e-9 * (high - low) <= tick.get_loc() <= high + 1e-9 * (high - low)
            ]
            texts += [label for tick in shown for label in (tick.label1, tick.label2) if tick.get_visible()]
    return [text for text in texts if text.get_visible() and text.get_text().strip()]


def texts_outside(figure: Figure) -> list[str]:
    """The text of every visible text artist of ``figure`` whose extent is not wholly inside the figure (a name cut
    at its edge); empty when nothing is clipped."""
    renderer, box = renderer_of(figure), figure.bbox.padded(0.5)
    extents = ((text.get_text(), text.get_window_extent(renderer)) for text in visible_texts(figure))
    return [
        text
        for text, extent in extents
        if not (box.contains(extent.x0, extent.y0) and box.contains(extent.x1, extent.y1))
    ]


def _ticks(axis) -> list:
    return [*axis.majorTicks, *axis.minorTicks]

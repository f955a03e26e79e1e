"""Plot helpers: each takes an ``ax`` first and returns what it drew, so notebooks, widgets and tests share
them. What a conversion can get wrong is shown as what it changed: per tensor, the largest difference
converted − source (zero everywhere for a correct conversion) and the norm ratio ‖converted‖ / ‖source‖ (one
everywhere). :class:`Hover` names the tensor under the pointer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from matplotlib.ticker import FixedLocator, MaxNLocator

from chclip_convert.changes.weight_stats import TensorComparison
from chclip_convert.notebook.fonts import use_cjk_font
from chclip_convert.tensor_stats import COMPARED

if TYPE_CHECKING:
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from matplotlib.legend import Legend

DIFFERENCE, RATIO = "difference", "ratio"
QUANTITIES = {DIFFERENCE: "max |converted − source|", RATIO: "‖converted‖ / ‖source‖"}
# Every difference axis (a conversion's max |Δ|, a diff's or a run's relative change) is symmetric-log: linear up
# to LINTHRESH, so exactly 0 (bit-identical) is drawn, then logarithmic, so float16 rounding (~1e-4), fine-tuning
# (~1e-2) and a real error (~1e-1) all show, decades apart.
LINTHRESH = 1e-7
PROBLEM_COLOUR = "#d62728"
PAIRED = "tab20"  # colour pairs: a module's weight dark, its bias light
# Type sizes in points. A figure shows at 100 dpi on ipympl's canvas (1 pt = 1.39 px) and at 96 px per inch as an
# SVG image (1.33 px): every text stays at least MIN_TEXT_PX tall at 100 % zoom.
TEXT_PT = 9.0  # ticks' names, legends, axis labels, the hover label, numbers in cells: 12.5 px
NAMES_PT = 8.5  # the dense column of names outside the layers (15 rows for CLIP): 11.8 px
TITLE_PT = 10.0
MIN_TEXT_PX = 10.0
NAME_CHARS = 30  # a name on an axis longer than this loses its middle to "…"
HOVER_CHARS = 34  # the hover label's lines: a name is wrapped at its dots to lines this long


class Drawn(NamedTuple):
    """A scatter drawn by a helper, and the tensors of its points, in order (what :class:`Hover` names)."""

    artist: object
    comparisons: list[TensorComparison]


def value(comparison: TensorComparison, quantity: str) -> float | None:
    """The difference or the norm ratio of a tensor; ``None`` where it lacks a side or the shapes differ."""
    return comparison.max_abs_diff if quantity == DIFFERENCE else comparison.norm_ratio


def plot_layers(ax, comparisons: list[TensorComparison], tower: str, quantity: str = DIFFERENCE) -> dict[str, Drawn]:
    """Per layer of one ``tower``, one dot per parameter, side by side within the layer and coloured by
    parameter; tensors lacking a side (or of another shape) are red crosses along the top, whatever ``value``."""
    layered = [c for c in comparisons if c.tower == tower and c.layer is not None]
    parameters = sorted({c.parameter for c in layered}, key=_module_order)
    colours = _parameter_colours(parameters)
    drawn: dict[str, Drawn] = {}
    for number, parameter in enumerate(parameters):
        group = [c for c in layered if c.parameter == parameter and c.kind in COMPARED]
        offset = 0.8 * ((number + 0.5) / len(parameters) - 0.5)
        if group:
            marker = "^" if parameter.endswith("bias") else "o"
            artist = ax.scatter(
                [c.layer + offset for c in group], [_clipped(value(c, quantity)) for c in group],
                s=16, marker=marker, color=colours[parameter], label=_label(parameter), zorder=3,
            )  # fmt: skip
            drawn[parameter] = Drawn(artist, group)
    problems = [c for c in layered if c.kind not in COMPARED]
    if problems:
        drawn["problems"] = _draw_problems(ax, [c.layer for c in problems], problems, horizontal=True)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    layers = [c.layer for c in layered]
    if layers:
        ax.set_xlim(min(layers) - 0.6, max(layers) + 0.6)
    ax.set_xlabel(f"{tower} layer", fontsize=TEXT_PT)
    _scale(ax, [value(c, quantity) for c in layered], quantity, vertical=True)
    ax.set_title(f"{tower} layers", fontsize=TITLE_PT)
    return drawn


def plot_outside_layers(ax, comparisons: list[TensorComparison], quantity: str = DIFFERENCE) -> dict[str, Drawn]:
    """The tensors outside the layers (embeddings, layer norms before and after, projections, logit_scale),
    one row each, named on the axis."""
    rows = sorted((c for c in comparisons if c.layer is None), key=lambda c: (c.tower, c.target))
    drawn: dict[str, Drawn] = {}
    good = [(row, c) for row, c in enumerate(rows) if c.kind in COMPARED]
    if good:
        artist = ax.scatter(
            [_clipped(value(c, quantity)) for _, c in good], [row for row, _ in good], s=22, zorder=3,
            color=["C0" if c.tower == "vision" else "C1" if c.tower == "text" else "C2" for _, c in good],
        )  # fmt: skip
        drawn["tensors"] = Drawn(artist, [c for _, c in good])
    problems = [(row, c) for row, c in enumerate(rows) if c.kind not in COMPARED]
    if problems:
        drawn["problems"] = _draw_problems(ax, [r for r, _ in problems], [c for _, c in problems], horizontal=False)
    ax.set_yticks(range(len(rows)), [_outside_name(c.target) for c in rows], fontsize=NAMES_PT)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    _scale(ax, [value(c, quantity) for c in rows], quantity, vertical=False)
    ax.set_title("outside the layers", fontsize=TITLE_PT)
    return drawn


def _draw_problems(ax, positions: list[float], problems: list[TensorComparison], *, horizontal: bool) -> Drawn:
    """Red crosses at the far edge of the value axis, at each tensor's layer (or row)."""
    label = f"one side only / shape differs ({len(problems)})"
    return Drawn(edge_crosses(ax, positions, horizontal=horizontal, label=label), problems)


def edge_crosses(ax, positions: list[float], *, horizontal: bool, label: str):
    """Red crosses at the far edge of the value axis (the top, for a horizontal layer axis; the right, for rows),
    at each position: where a name has no value to draw (one side lacks it, or its shape differs)."""
    edge = ax.get_xaxis_transform() if horizontal else ax.get_yaxis_transform()
    xy = (positions, [0.96] * len(positions)) if horizontal else ([0.96] * len(positions), positions)
    return ax.scatter(*xy, transform=edge, marker="X", s=60, color=PROBLEM_COLOUR, label=label, zorder=4)


def zero_symlog_axis(ax, values: list[float], *, vertical: bool) -> None:
    """Make ``ax``'s value axis a difference axis: symlog (see :data:`LINTHRESH`) from just below 0, so points at 0
    are whole, up to at least 1e-2 and past the largest of ``values``, with a line at 0. Along a horizontal axis
    0 and every third decade from 10⁻⁶ are named, so that the names never run into each other on a narrow axes."""
    set_scale, set_limits, line, axis = (
        (ax.set_yscale, ax.set_ylim, ax.axhline, ax.yaxis)
        if vertical
        else (ax.set_xscale, ax.set_xlim, ax.axvline, ax.xaxis)
    )
    set_scale("symlog", linthresh=LINTHRESH)
    top = max([1e-2, *values]) * 4
    set_limits(-0.4 * LINTHRESH, top)
    if not vertical:
        axis.set_major_locator(FixedLocator([0.0, *(10.0**e for e in range(-6, math.ceil(math.log10(top)) + 1, 3))]))
    line(0.0, color="#999999", lw=0.8, zorder=1)


def _scale(ax, values: list[float | None], quantity: str, *, vertical: bool) -> None:
    """Difference: symlog from 0, up to at least 1e-2. Ratio: linear around 1, at least 0.9 to 1.1."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if quantity == DIFFERENCE:
        zero_symlog_axis(ax, finite, vertical=vertical)
    else:
        set_limits, line = (ax.set_ylim, ax.axhline) if vertical else (ax.set_xlim, ax.axvline)
        low, high = min([1.0, *finite]), max([1.0, *finite])
        pad = 0.08 * (high - low)
        set_limits(min(0.9, low - pad), max(1.1, high + pad))
        line(1.0, color="#999999", lw=0.8, zorder=1)
    if vertical:
        ax.set_ylabel(QUANTITIES[quantity], fontsize=TEXT_PT)
    else:  # ending at the axes' right edge: centred, it runs into the legend on the right
        ax.set_xlabel(QUANTITIES[quantity], fontsize=TEXT_PT, loc="right")


def _clipped(number: float) -> float:
    """An infinite ratio (a zero source, a nonzero converted tensor) drawn at a large finite value."""
    return number if math.isfinite(number) else 1e6


def _module_order(parameter: str) -> tuple[str, int]:
    module, _, kind = parameter.rpartition(".")
    return module, 0 if kind == "weight" else 1


def _parameter_colours(parameters: list[str]) -> dict[str, object]:
    from matplotlib import colormaps

    palette = colormaps[PAIRED].colors
    modules = list(dict.fromkeys(p.rpartition(".")[0] for p in parameters))
    colours = {}
    for parameter in parameters:
        module, _, kind = parameter.rpartition(".")
        colours[parameter] = palette[(2 * modules.index(module) + (kind != "weight")) % len(palette)]
    return colours


def _label(parameter: str) -> str:
    return parameter.replace("self_attn.", "").replace("attention.self.", "").replace("attention.output.", "attn.")


def draw_comparisons(figure: Figure, comparisons: list[TensorComparison]) -> Hover:
    """The whole picture in ``figure``, laid out once by matplotlib's constrained layout so that no text leaves it:
    rows the difference and the norm ratio; columns the vision layers, the text layers and the tensors outside
    the layers; each tower's legend on the right. Returns the :class:`Hover` that names tensors."""
    constrained_layout(figure, w_pad=0.03, h_pad=0.03, wspace=0.03, hspace=0.04)
    axes = figure.subplots(2, 3, width_ratios=[1, 1, 0.95])
    hover = Hover(figure)
    legends: dict[str, dict[str, Drawn]] = {}
    for row, quantity in enumerate((DIFFERENCE, RATIO)):
        for column, tower in enumerate(("vision", "text")):
            legends[tower] = plot_layers(axes[row][column], comparisons, tower, quantity)
            hover.add(legends[tower])
            if column:  # the row's quantity is named once, on its first axes
                axes[row][column].set_ylabel("")
        hover.add(plot_outside_layers(axes[row][2], comparisons, quantity))
    problems = sum(c.kind not in COMPARED for c in comparisons)
    for place, (tower, drawn) in zip(("upper", "lower"), legends.items(), strict=True):
        tower_legend(figure, tower, drawn, problems if place == "upper" else 0, place)
    differ = sum(not c.agrees for c in comparisons)
    figure.suptitle(f"{len(comparisons)} tensors, {differ} differ", fontsize=TITLE_PT + 1)
    freeze_layout(figure)
    return hover


def constrained_layout(figure: Figure, **params: float) -> None:
    """Lay ``figure`` out by matplotlib's constrained layout (``params`` its pads and spaces), within the region
    a layout already set keeps (:func:`chclip_convert.notebook.plotting.figures.new_figure` keeps ipympl's
    toolbar's strip clear)."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine

    engine = figure.get_layout_engine()
    if isinstance(engine, ConstrainedLayoutEngine):
        engine.set(**params)
    else:
        figure.set_layout_engine("constrained", **params)


def freeze_layout(figure: Figure) -> None:
    """Lay ``figure`` out once, now, and keep that layout: each redraw (a hover label shown, a zoom) then costs
    the drawing alone, not a constrained layout's measuring of every text again (twice the time)."""
    figure.draw_without_rendering()
    figure.set_layout_engine("none")


COLUMNS = {"vision": "left", "text": "middle"}  # where each tower's layers are, for its legend's title


def tower_legend(figure: Figure, tower: str, drawn: dict[str, Drawn], problems: int, place: str) -> Legend:
    """A legend of one tower's layer dots, outside the axes on the right (``place`` "upper" or "lower"): one
    line per module, its weight's dot and its bias's triangle side by side; with ``problems``, the red cross."""
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.lines import Line2D

    modules: dict[str, list] = {}
    for parameter, (artist, _) in drawn.items():
        if parameter != "problems":
            modules.setdefault(_label(parameter.rpartition(".")[0]), []).append(artist)
    handles, labels = [tuple(artists) for artists in modules.values()], list(modules)
    if problems:
        handles.append(Line2D([], [], linestyle="none", marker="X", markersize=8, color=PROBLEM_COLOUR))
        labels.append(f"one side only /\nshape differs\n({problems}, all columns)")
    return figure.legend(
        handles, labels, loc=f"outside right {place}", title=f"{tower} layers ({COLUMNS[tower]})\n● weight  ▲ bias",
        frameon=False, fontsize=TEXT_PT, title_fontsize=TEXT_PT, handlelength=1.6,
        handler_map={tuple: HandlerTuple(ndivide=None)},
    )  # fmt: skip


class Hover:
    """Names the tensor under the pointer: on ``motion_notify_event`` over a point of a registered scatter, an
    annotation shows its name, difference and norm ratio; ``text`` is what it shows ("" when hidden)."""

    def __init__(self, figure) -> None:
        self.figure = figure
        self.drawn: list[Drawn] = []
        self.listeners: list[Callable[[str], None]] = []  # each called with the new text when it changes
        self.annotations: dict[object, object] = {}  # one per axes, made when first needed
        self.text = ""
        figure.canvas.mpl_connect("motion_notify_event", self._on_motion)

    def add(self, drawn: dict[str, Drawn]) -> None:
        self.drawn.extend(drawn.values())

    def _on_motion(self, event) -> None:
        found = self.under(event)
        text = describe(found[1]) if found else ""
        if text == self.text:
            return
        for annotation in self.annotations.values():
            annotation.set_visible(False)
        if found:
            annotation = self._annotation(found[0].axes)
            annotation.xy = (event.xdata, event.ydata)
            annotation.set_text(hover_label(found[1]))
            annotation.set_visible(True)
            self._place(annotation, event.x, event.y)
        self.text = text
        self.figure.canvas.draw_idle()
        for listener in self.listeners:
            listener(text)

    def under(self, event) -> tuple[object, TensorComparison, int] | None:
        """The scatter, tensor and point index under a mouse event, or ``None``."""
        for artist, comparisons in self.drawn:
            if event.inaxes is artist.axes:
                hit, info = artist.contains(event)
                if hit:
                    index = int(info["ind"][0])
                    return artist, comparisons[index], index
        return None

    def _annotation(self, ax):
        """The label of ``ax``'s points: pinned to its data, but the figure's, so that it is drawn over every
        axes (an axes' own artists are hidden by the axes drawn after it)."""
        if ax not in self.annotations:
            from matplotlib.text import Annotation

            annotation = Annotation(
                "", (0, 0), xycoords=ax.transData, xytext=(0, 0), textcoords="offset pixels", fontsize=TEXT_PT,
                multialignment="left", zorder=10, annotation_clip=False, visible=False,
                bbox={"boxstyle": "round,pad=0.3", "fc": "#fffbe6", "ec": "#888888"},
            )  # fmt: skip
            annotation.set_in_layout(False)  # a layout never moves the axes for it
            self.annotations[ax] = self.figure.add_artist(annotation)
        return self.annotations[ax]

    def _place(self, annotation, x: float, y: float) -> None:
        """Put the label beside the pointer (at ``x``, ``y`` pixels), on the side toward the figure's centre,
        then move it back inside the figure wherever it would still cross an edge."""
        box = self.figure.bbox
        right, top = x > box.x0 + box.width / 2, y > box.y0 + box.height / 2
        annotation.set_horizontalalignment("right" if right else "left")
        annotation.set_verticalalignment("top" if top else "bottom")
        gap = HOVER_GAP_PX * self.figure.dpi / 100
        annotation.xyann = (-gap if right else gap, -gap if top else gap)
        extent = annotation.get_window_extent(renderer_of(self.figure))
        margin = 0.3 * TEXT_PT * self.figure.dpi / 72 + 2  # the round box's pad, and a little more
        dx = max(box.x0 + margin - extent.x0, 0) + min(box.x1 - margin - extent.x1, 0)
        dy = max(box.y0 + margin - extent.y0, 0) + min(box.y1 - margin - extent.y1, 0)
        annotation.xyann = (annotation.xyann[0] + dx, annotation.xyann[1] + dy)


HOVER_GAP_PX = 12  # from the pointer to the hover label


def renderer_of(figure: Figure) -> RendererBase:
    """The renderer that measures ``figure``'s texts: its canvas's, an Agg canvas given to a figure that has none
    able to draw (a bare ``Figure()``)."""
    if not hasattr(figure.canvas, "get_renderer"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(figure)
    return figure.canvas.get_renderer()


def hover_label(comparison: TensorComparison) -> str:
    """What the hover label shows of a tensor: :func:`describe`'s text, its name wrapped at dots and its numbers a
    line each, so that it is narrow enough to stay inside the figure."""
    name, _, numbers = describe(comparison).partition("\n")
    return "\n".join([*wrap_name(name, HOVER_CHARS), *numbers.replace(", norm", "\nnorm").split("\n")])


def wrap_name(name: str, width: int) -> list[str]:
    """``name`` in lines at most ``width`` long (but for one part longer than that), broken after its dots."""
    lines = [""]
    for piece in name.replace(".", ".\0").split("\0"):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return lines


def shorten(text: str, limit: int) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and end around a "…" (``limit`` in all)."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    return f"{text[: (keep + 1) // 2]}…{text[len(text) - keep // 2 :]}"


def describe(comparison: TensorComparison) -> str:
    """Two lines: the tensor's name, then its difference and norm ratio (or which side lacks it)."""
    if comparison.kind not in COMPARED:
        return f"{comparison.target}\n{comparison.kind_text} ({comparison.status})"
    return (
        f"{comparison.target}\nmax |Δ| {comparison.max_abs_diff:.3g}, norm ratio {comparison.norm_ratio:.6g}"
        f" ({comparison.status})"
    )


def plot_histogram(
    ax, source: torch.Tensor | None, converted: torch.Tensor | None, name: str, bins: int = 60
) -> dict[str, object]:
    """Value histograms of one tensor, source filled and converted outlined, over one range; returns the two
    step patches. Counted with ``torch.histc`` (one pass, any size), not by matplotlib."""
    sides = (("source", source), ("converted", converted))
    present, extremes, non_finite = {}, [], 0
    for side, tensor in sides:
        if tensor is None or not tensor.numel():
            continue
        values, (low, high) = _finite(tensor.detach().reshape(-1).float())
        non_finite += tensor.numel() - values.numel()
        if values.numel():
            present[side] = values
            extremes += [low, high]
    low, high = (min(extremes), max(extremes)) if extremes else (0.0, 1.0)
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    drawn = {}
    for side, style in (("source", {"fill": True, "alpha": 0.5}), ("converted", {"lw": 2})):
        if side in present:
            counts = torch.histc(present[side], bins=bins, min=low, max=high).numpy()
            drawn[side] = ax.stairs(counts, edges, label=side, **style)
    missing = [side for side, tensor in sides if tensor is None]
    notes = [f"no {' / '.join(missing)} tensor"] * bool(missing)
    notes += [f"{non_finite} NaN/Inf not drawn"] * bool(non_finite)
    ax.set_title(_short(name) + (f"  ({'; '.join(notes)})" if notes else ""), fontsize=TEXT_PT)
    ax.set_xlabel("value", fontsize=TEXT_PT)
    ax.set_ylabel("count", fontsize=TEXT_PT)
    ax.tick_params(labelsize=TEXT_PT)
    ax.legend(fontsize=TEXT_PT)
    return drawn


def _finite(values: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """The finite values (NaN and Inf have no bin) and their extremes. Finite extremes mean every value is
    finite (min and max propagate NaN), so only a tensor that holds NaN or Inf is copied."""
    low, high = (x.item() for x in torch.aminmax(values))
    if not (math.isfinite(low) and math.isfinite(high)):
        values = values[torch.isfinite(values)]
        low, high = (x.item() for x in torch.aminmax(values)) if values.numel() else (0.0, 0.0)
    return values, (low, high)


def plot_similarity(ax, logits: torch.Tensor, captions: list[str], title: str, image_labels: list[str]):
    """A heatmap of image × caption logits with the values written in the cells, each in black or white,
    whichever stands out more from its cell's colour; the captions (Chinese too, in a CJK font) on the axis."""
    family = use_cjk_font()
    font = {"fontfamily": family} if family else {}
    matrix = logits.detach().float().numpy()
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(captions)), captions, rotation=30, ha="right", rotation_mode="anchor", fontsize=TEXT_PT,
                  **font)  # fmt: skip
    ax.set_yticks(range(len(image_labels)), image_labels, fontsize=TEXT_PT, **font)
    for (row, column), number in np.ndenumerate(matrix):
        colour = text_colour_on(image.cmap(image.norm(number)))
        ax.text(column, row, f"{number:.2f}", ha="center", va="center", color=colour, fontsize=TEXT_PT)
    ax.set_title(title, fontsize=TITLE_PT)
    return image


def draw_similarities(
    figure: Figure, image, logits: dict[str, torch.Tensor], captions: list[str], image_label: str = "photo"
) -> list[AxesImage]:
    """``image`` (a PIL image or an array) beside a :func:`plot_similarity` heatmap for each of ``logits``
    (title → image × caption logits), laid out by matplotlib's constrained layout so that every caption stays
    inside ``figure``; returns the heatmaps' images."""
    constrained_layout(figure)
    photo, *axes = figure.subplots(1, 1 + len(logits))
    photo.imshow(image)
    photo.set_axis_off()
    return [
        plot_similarity(ax, values, captions, title, [image_label])
        for ax, (title, values) in zip(axes, logits.items(), strict=True)
    ]


def relative_luminance(colour: object) -> float:
    """WCAG 2's relative luminance of a matplotlib colour: 0 for black, 1 for white."""
    from matplotlib.colors import to_rgb

    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour)]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(first: object, second: object) -> float:
    """WCAG 2's contrast ratio of two colours, 1 (the same) to 21 (black on white); 4.5 is enough for text."""
    light, dark = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def text_colour_on(background: object) -> str:
    """Black or white: whichever contrasts more with ``background`` (at least 4.58 on any colour)."""
    return "black" if contrast_ratio("black", background) >= contrast_ratio("white", background) else "white"


def _outside_name(name: str) -> str:
    """A name outside the layers as its axis shows it: its tower a word, "embedding" cut short, at most
    :data:`NAME_CHARS` long (its full name is in the hover label)."""
    short = name.replace("vision_model.", "vision ").replace("text_model.", "text ").replace("embeddings.", "emb.")
    return shorten(short.replace("_embeddings", "_emb").replace("_embedding", "_emb"), NAME_CHARS)


def _short(name: str) -> str:
    return name.replace("vision_model.encoder.layers.", "v.").replace("text_model.encoder.layer.", "t.")

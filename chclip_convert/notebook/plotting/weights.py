"""Plot helpers: each takes an ``ax`` first and returns what it drew, so notebooks, widgets and tests share
them. What a conversion can get wrong is shown as what it changed: per tensor, the largest difference
converted − source (zero everywhere for a correct conversion) and the norm ratio ‖converted‖ / ‖source‖ (one
everywhere). :class:`Hover` names the tensor under the pointer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from chclip_convert.changes.weight_stats import TensorComparison
from chclip_convert.notebook.fonts import use_cjk_font
from chclip_convert.tensor_stats import COMPARED

DIFFERENCE, RATIO = "difference", "ratio"
QUANTITIES = {DIFFERENCE: "max |converted − source|", RATIO: "‖converted‖ / ‖source‖"}
# Every difference axis (a conversion's max |Δ|, a diff's or a run's relative change) is symmetric-log: linear up
# to LINTHRESH, so exactly 0 (bit-identical) is drawn, then logarithmic, so float16 rounding (~1e-4), fine-tuning
# (~1e-2) and a real error (~1e-1) all show, decades apart.
LINTHRESH = 1e-7
PROBLEM_COLOUR = "#d62728"
PAIRED = "tab20"  # colour pairs: a module's weight dark, its bias light


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
    ax.set_xlabel(f"{tower} layer")
    _scale(ax, [value(c, quantity) for c in layered], quantity, vertical=True)
    ax.set_title(f"{tower} tower: {QUANTITIES[quantity]}", fontsize=10)
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
    ax.set_yticks(range(len(rows)), [_outside_name(c.target) for c in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    _scale(ax, [value(c, quantity) for c in rows], quantity, vertical=False)
    ax.set_title(f"outside the layers: {QUANTITIES[quantity]}", fontsize=10)
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
    are whole, up to at least 1e-2 and past the largest of ``values``, with a line at 0."""
    set_scale, set_limits, line = (
        (ax.set_yscale, ax.set_ylim, ax.axhline) if vertical else (ax.set_xscale, ax.set_xlim, ax.axvline)
    )
    set_scale("symlog", linthresh=LINTHRESH)
    set_limits(-0.4 * LINTHRESH, max([1e-2, *values]) * 4)
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
    (ax.set_ylabel if vertical else ax.set_xlabel)(QUANTITIES[quantity], fontsize=8)


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


def draw_comparisons(figure, comparisons: list[TensorComparison]) -> Hover:
    """The whole picture in ``figure``: rows vision layers, text layers, outside the layers; columns the
    difference and the norm ratio; legends on the right. Returns the :class:`Hover` that names tensors."""
    grid = figure.add_gridspec(3, 2, height_ratios=[3, 3, 3.4], hspace=0.55, wspace=0.6)
    hover = Hover(figure)
    for column, quantity in enumerate((DIFFERENCE, RATIO)):
        for row, tower in enumerate(("vision", "text")):
            ax = figure.add_subplot(grid[row, column])
            hover.add(plot_layers(ax, comparisons, tower, quantity))
            if column == 1 and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.05), frameon=False, handlelength=1)
        hover.add(plot_outside_layers(figure.add_subplot(grid[2, column]), comparisons, quantity))
    differ = sum(not c.agrees for c in comparisons)
    figure.suptitle(f"{len(comparisons)} tensors, {differ} differ — hover over a point to name its tensor")
    figure.subplots_adjust(left=0.17, right=0.83, top=0.93, bottom=0.06)
    return hover


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
            annotation.set_text(text)
            annotation.set_visible(True)
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
        if ax not in self.annotations:
            self.annotations[ax] = ax.annotate(
                "", (0, 0), xytext=(10, 10), textcoords="offset points", fontsize=8, zorder=10, annotation_clip=False,
                bbox={"boxstyle": "round", "fc": "#fffbe6", "ec": "#888888"}, visible=False,
            )  # fmt: skip
        return self.annotations[ax]


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
    ax.set_title(_short(name) + (f"  ({'; '.join(notes)})" if notes else ""), fontsize=9)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
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
    """A heatmap of image × caption logits with the values written in the cells, the captions (Chinese too,
    in a CJK font) on the axis."""
    family = use_cjk_font()
    font = {"fontfamily": family} if family else {}
    matrix = logits.detach().float().numpy()
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(captions)), captions, rotation=30, ha="right", fontsize=8, **font)
    ax.set_yticks(range(len(image_labels)), image_labels, fontsize=8, **font)
    for (row, column), number in np.ndenumerate(matrix):
        ax.text(column, row, f"{number:.2f}", ha="center", va="center", color="white", fontsize=7)
    ax.set_title(title, fontsize=10)
    return image


def _outside_name(name: str) -> str:
    return name.replace("vision_model.", "vision ").replace("text_model.", "text ").replace("embeddings.", "emb.")


def _short(name: str) -> str:
    return name.replace("vision_model.encoder.layers.", "v.").replace("text_model.encoder.layer.", "t.")

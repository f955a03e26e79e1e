"""A training run's figures: per tower, a heatmap of every layer's relative change by epoch (from the
reference, and from the epoch before), and curves for the embeddings, the projections and ``logit_scale``.

A part left bit-identical is drawn grey and marked "=", apart from any change however small: "did the frozen
tower move at all?" is answered by colour, not by reading a scale."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from chclip_convert.changes.drift import Drift
from chclip_convert.mapping.parts import EMBEDDINGS, LOGIT_SCALE, PROJECTION, TEXT, VISION, Part
from chclip_convert.notebook.fonts import use_cjk_font
from chclip_convert.notebook.plotting.diffs import TOWER_STYLES
from chclip_convert.notebook.plotting.weights import LINTHRESH, NAMES_PT, TEXT_PT, TITLE_PT, constrained_layout

UNCHANGED_COLOUR = "#d9d9d9"
CMAP = "viridis"
COMPARISONS = (("from the reference", "vs_reference"), ("from the epoch before", "vs_previous"))
CURVE_SECTIONS = (EMBEDDINGS, PROJECTION, LOGIT_SCALE)


def tower_parts(drift: Drift, tower: str) -> list[Part]:
    return [part for part in drift.parts if part.tower == tower]


def heatmap_values(drift: Drift, tower: str, which: str) -> np.ndarray:
    """Rows: the tower's parts in order; columns: epochs."""
    values = getattr(drift, which)
    return np.array([values[part] for part in tower_parts(drift, tower)], dtype=float)


def draw_heatmaps(figure: Figure, drift: Drift) -> dict:
    """A 2 × 2 grid: rows from the reference and epoch to epoch, columns vision and text; one colour scale for
    all four (logarithmic over the changes seen). Returns the images drawn, keyed by (tower, which)."""
    use_cjk_font()
    moved = np.concatenate([heatmap_values(drift, t, w).ravel() for t in (VISION, TEXT) for _, w in COMPARISONS])
    moved = moved[np.isfinite(moved) & (moved > 0)]
    norm = LogNorm(moved.min(), moved.max()) if moved.size else LogNorm(1e-6, 1e-1)
    if moved.size and moved.min() == moved.max():
        norm = LogNorm(moved.min() / 10, moved.max() * 10)
    cmap = _colormap()
    constrained_layout(figure)  # the text tower's layer names clear the vision heatmap
    axes = figure.subplots(2, 2, squeeze=False)
    images = {}
    for row, (title, which) in enumerate(COMPARISONS):
        for column, tower in enumerate((VISION, TEXT)):
            images[(tower, which)] = _heatmap(axes[row][column], drift, tower, which, norm, cmap, title)
    figure.colorbar(next(iter(images.values())), ax=axes, shrink=0.8, label="‖ΔW‖ / ‖W‖  (grey, =: unchanged)")
    return images


def _heatmap(ax, drift: Drift, tower: str, which: str, norm, cmap, title: str):
    values = heatmap_values(drift, tower, which)
    parts = tower_parts(drift, tower)
    shown = np.ma.masked_where(~(values > 0), values)  # zero (bit-identical) and NaN are drawn grey
    image = ax.imshow(shown, aspect="auto", norm=norm, cmap=cmap, interpolation="nearest")
    for (row, column), value in np.ndenumerate(values):
        if value == 0:
            ax.text(column, row, "=", ha="center", va="center", fontsize=TEXT_PT, color="#333333")
    ax.set_xticks(range(len(drift.epochs)), [info.label for info in drift.epochs], fontsize=TEXT_PT)
    step = math.ceil(len(parts) / _rows_named(ax.figure))  # every part named if they fit, else every step-th
    ax.set_yticks(range(0, len(parts), step), [part.label for part in parts][::step], fontsize=NAMES_PT)
    ax.set_title(f"{tower} tower, {title}", fontsize=TITLE_PT)
    return image


def _rows_named(figure: Figure) -> int:
    """How many names fit, without touching, down one heatmap: a row of heatmaps has under half the figure's
    height (titles and epochs take the rest), a name a line and a quarter."""
    return max(int(figure.get_figheight() * 72 * 0.38 / (NAMES_PT * 1.25)), 1)


def _colormap():
    import matplotlib

    return matplotlib.colormaps[CMAP].with_extremes(bad=UNCHANGED_COLOUR)


def curve_parts(drift: Drift) -> list[Part]:
    """The parts the curves follow: each tower's embeddings and projection, and ``logit_scale``."""
    return [part for part in drift.parts if part.section in CURVE_SECTIONS]


def draw_curves(figure: Figure, drift: Drift) -> dict[Part, list]:
    """Two panels (from the reference, epoch to epoch), a line per curve part; returns the lines by part."""
    use_cjk_font()
    constrained_layout(figure)
    axes = figure.subplots(1, 2, squeeze=False)[0]
    lines: dict[Part, list] = {}
    x = range(len(drift.epochs))
    for ax, (title, which) in zip(axes, COMPARISONS, strict=True):
        values = getattr(drift, which)
        for part in curve_parts(drift):
            style = TOWER_STYLES[part.tower]
            (line,) = ax.plot(x, values[part], label=f"{part.tower} {part.label}", **style)
            lines.setdefault(part, []).append(line)
        ax.set_yscale("symlog", linthresh=LINTHRESH)
        ax.set_ylabel("‖ΔW‖ / ‖W‖  (0: bit-identical)", fontsize=TEXT_PT)
        ax.set_ylim(bottom=0)
        ax.set_xticks(list(x), [info.label for info in drift.epochs], fontsize=TEXT_PT)
        ax.tick_params(axis="y", labelsize=TEXT_PT)
        ax.set_title(f"relative change {title}", fontsize=TITLE_PT)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=TEXT_PT)
    return lines

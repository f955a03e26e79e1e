"""The figure of a comparison (:class:`chclip_convert.changes.diff.CheckpointDiff`): per tower, the relative change
‖B − A‖ / ‖A‖ of each layer (its tensors together), and below, the parts outside the layers (embeddings, norms,
projections, ``logit_scale``) one row each, named on the axis — the layout of
:func:`chclip_convert.notebook.plotting.weights.plot_outside_layers`.

The value axes are difference axes (:func:`chclip_convert.notebook.plotting.weights.zero_symlog_axis`). Names
that could not be compared (only in A, only in B, shape differs) are red crosses along the far edge."""

from __future__ import annotations

import math
from typing import NamedTuple

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from chclip_convert.changes.diff import CheckpointDiff, PartChange
from chclip_convert.mapping.parts import LAYER, SHARED, TEXT, VISION, Part, part_of
from chclip_convert.notebook.fonts import use_cjk_font
from chclip_convert.notebook.plotting.weights import (
    NAME_CHARS,
    NAMES_PT,
    TEXT_PT,
    TITLE_PT,
    constrained_layout,
    edge_crosses,
    freeze_layout,
    shorten,
    zero_symlog_axis,
)

QUANTITY = "‖B − A‖ / ‖A‖"
CLIP = 1e6  # an infinite change (A all zero, B not) is drawn here
TOWER_COLOURS = {VISION: "C0", TEXT: "C1", SHARED: "C2"}  # as plots.plot_outside_layers colours its rows
# Where both towers sit at 0 their lines overlap: the vision tower's hollow squares show around the text's dots
# (here, and in the training run's curves).
TOWER_STYLES = {
    VISION: {"linestyle": "--", "marker": "s", "markersize": 8, "markerfacecolor": "none"},
    TEXT: {"linestyle": "-", "marker": "o", "markersize": 5},
    SHARED: {"linestyle": ":", "marker": "^", "markersize": 7},
}


class DiffFigure(NamedTuple):
    """What :func:`draw_diff` drew: a line per tower with layers (x the layer, y its relative change), the
    scatter of the parts outside the layers and those parts (its rows, top to bottom), and the red crosses."""

    lines: dict[str, object]
    outside: object | None
    outside_parts: list[Part]
    problems: list[object]


def layer_changes(diff: CheckpointDiff) -> dict[str, list[PartChange]]:
    """Tower → its layers' changes, in layer order (towers without layers left out)."""
    towers: dict[str, list[PartChange]] = {}
    for change in diff.parts():
        if change.part.section == LAYER:
            towers.setdefault(change.part.tower, []).append(change)
    return towers


def problem_names(diff: CheckpointDiff) -> list[str]:
    """Every name that could not be compared: only in A, only in B, or of another shape."""
    return sorted([*diff.only_in_a, *diff.only_in_b, *diff.shape_differs])


def outside_parts(diff: CheckpointDiff) -> list[Part]:
    """The parts outside the layers, compared or not, in tower → section order."""
    parts = {change.part for change in diff.parts() if change.part.section != LAYER}
    parts |= {part for part in map(part_of, problem_names(diff)) if part.section != LAYER}
    return sorted(parts, key=Part.sort_key)


def draw_diff(figure: Figure, diff: CheckpointDiff) -> DiffFigure:
    """The whole picture in ``figure``, laid out once by matplotlib's constrained layout so that no text leaves
    it: the layers on top (a line per tower), the rest below."""
    use_cjk_font()  # the title names no file, but a key may be anything: never draw empty boxes
    rows = outside_parts(diff)
    constrained_layout(figure)
    grid = figure.add_gridspec(2, 1, height_ratios=[3, 0.6 + 0.35 * max(len(rows), 1)])
    layers_ax, outside_ax = figure.add_subplot(grid[0]), figure.add_subplot(grid[1])
    lines = plot_layer_changes(layers_ax, diff)
    outside, problems = plot_outside_changes(outside_ax, diff, rows)
    problems = [*_layer_problems(layers_ax, diff), *problems]
    compared, differing = len(diff.changes), len(diff.differs)
    figure.suptitle(f"B against A: {differing} of {compared} tensors differ", fontsize=TITLE_PT + 1)
    freeze_layout(figure)
    return DiffFigure(lines, outside, rows, problems)


def plot_layer_changes(ax, diff: CheckpointDiff) -> dict[str, object]:
    """A line per tower: each layer's relative change (its tensors together); an unchanged layer at 0."""
    lines, by_tower = {}, layer_changes(diff)
    for tower, changes in by_tower.items():
        moved = sum(1 for change in changes if change.differing)
        (lines[tower],) = ax.plot(
            [change.part.layer for change in changes], [_clipped(change.relative_change) for change in changes],
            color=TOWER_COLOURS[tower], zorder=3, label=f"{tower}: {moved} of {len(changes)} layers changed",
            **TOWER_STYLES.get(tower, {}),
        )  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer", fontsize=TEXT_PT)
    _scale(ax, [change.relative_change for changes in by_tower.values() for change in changes], True)
    ax.set_title(f"per layer: {QUANTITY}", fontsize=TITLE_PT)
    if lines:
        ax.legend(fontsize=TEXT_PT, loc="center right", handlelength=2.5)  # clear of 0 and of a real change
    return lines


def plot_outside_changes(ax, diff: CheckpointDiff, rows: list[Part] | None = None) -> tuple[object | None, list]:
    """The parts outside the layers, a row each, named on the axis; returns the scatter and the crosses."""
    rows = outside_parts(diff) if rows is None else rows
    changes = {change.part: change for change in diff.parts()}
    compared = [(row, changes[part]) for row, part in enumerate(rows) if part in changes]
    scatter = None
    if compared:
        scatter = ax.scatter(
            [_clipped(change.relative_change) for _, change in compared], [row for row, _ in compared], s=26,
            color=[TOWER_COLOURS[change.part.tower] for _, change in compared], zorder=3,
        )  # fmt: skip
    positions = [rows.index(part) for part in map(part_of, problem_names(diff)) if part in rows]
    problems = [_problems(ax, positions, horizontal=False)] if positions else []
    ax.set_yticks(
        range(len(rows)), [shorten(f"{part.tower} {part.label}", NAME_CHARS) for part in rows], fontsize=NAMES_PT
    )
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)
    _scale(ax, [change.relative_change for _, change in compared], False)
    ax.set_title(f"outside the layers: {QUANTITY}", fontsize=TITLE_PT)
    return scatter, problems


def _layer_problems(ax, diff: CheckpointDiff) -> list:
    """Red crosses along the top of the layer axes, at each layer holding a name that was not compared."""
    layers = [part.layer for part in map(part_of, problem_names(diff)) if part.section == LAYER]
    return [_problems(ax, layers, horizontal=True)] if layers else []


def _problems(ax, positions: list[float], *, horizontal: bool):
    label = f"only in A or B / shape differs ({len(positions)})"
    return edge_crosses(ax, positions, horizontal=horizontal, label=label)


def _scale(ax, values: list[float], vertical: bool) -> None:
    """Symlog from just below 0 (so points at 0 are whole), up to at least 1e-2."""
    finite = [_clipped(v) for v in values if not math.isnan(v)]
    zero_symlog_axis(ax, finite, vertical=vertical)
    (ax.set_ylabel if vertical else ax.set_xlabel)(f"{QUANTITY}  (0: bit-identical)", fontsize=TEXT_PT)
    ax.grid(alpha=0.3)


def _clipped(number: float) -> float:
    return number if math.isfinite(number) or math.isnan(number) else CLIP


__all__ = ["DiffFigure", "draw_diff", "layer_changes", "outside_parts", "plot_layer_changes", "plot_outside_changes"]

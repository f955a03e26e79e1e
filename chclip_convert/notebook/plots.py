"""Plot helpers: each takes an ``ax`` first and returns what it drew, so notebooks, widgets and tests
share them."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..weight_stats import STATS, TensorComparison

OP_MARKERS = {"rename": "o", "split": "^", "transpose": "s"}
MISSING_COLOUR = "#d62728"


def plot_stat_scatter(ax, comparisons: list[TensorComparison], stat: str = "norm") -> dict[str, object]:
    """Converted statistic against source statistic, one point per tensor, on the line y = x.

    Renamed, split and transposed tensors get their own markers; tensors that disagree are drawn red and
    labelled; tensors present on one side only are red crosses on the axis of the side that has them.
    """
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}")
    artists: dict[str, object] = {}
    both = [c for c in comparisons if c.source_stats and c.converted_stats]
    values = [c.source_stats[stat] for c in both] + [c.converted_stats[stat] for c in both]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = 0.05 * (high - low or 1.0)
    artists["diagonal"] = ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#999999", lw=1, zorder=0)
    for op, marker in OP_MARKERS.items():
        group = [c for c in both if c.op == op and c.agrees]
        if group:
            artists[op] = ax.scatter(
                [c.source_stats[stat] for c in group],
                [c.converted_stats[stat] for c in group],
                marker=marker,
                s=22,
                alpha=0.75,
                label=f"{op} ({len(group)})",
            )
    wrong = [c for c in both if not c.agrees]
    if wrong:
        artists["disagree"] = ax.scatter(
            [c.source_stats[stat] for c in wrong],
            [c.converted_stats[stat] for c in wrong],
            marker="D",
            s=60,
            color=MISSING_COLOUR,
            label=f"values differ ({len(wrong)})",
        )
    one_sided = [c for c in comparisons if bool(c.source_stats) != bool(c.converted_stats)]
    if one_sided:
        xs = [c.source_stats[stat] if c.source_stats else low - pad for c in one_sided]
        ys = [c.converted_stats[stat] if c.converted_stats else low - pad for c in one_sided]
        artists["one_sided"] = ax.scatter(
            xs, ys, marker="x", s=80, color=MISSING_COLOUR, label=f"one side only / shape differs ({len(one_sided)})"
        )
    for c in wrong + one_sided:
        x = c.source_stats[stat] if c.source_stats else low - pad
        y = c.converted_stats[stat] if c.converted_stats else low - pad
        ax.annotate(
            _short(c.target), (x, y), fontsize=7, color=MISSING_COLOUR, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel(f"source {stat}")
    ax.set_ylabel(f"converted {stat}")
    ax.set_title(f"{stat}: converted vs source ({len(comparisons)} tensors)")
    ax.legend(fontsize=8, loc="lower right")
    return artists


def plot_layer_curves(ax, comparisons: list[TensorComparison], tower: str, stat: str = "norm") -> dict[str, object]:
    """Per-layer ``stat`` for each parameter of one tower: source solid, converted dashed.

    A mapping that puts a tensor into the wrong layer, or drops one, shows as dashed leaving solid.
    """
    series: dict[str, dict[int, tuple[float | None, float | None]]] = defaultdict(dict)
    for c in comparisons:
        if c.tower != tower or c.layer is None or not c.target.endswith("weight"):
            continue
        family = c.target.split(f".{c.layer}.", 1)[1].removesuffix(".weight")
        series[family][c.layer] = (
            c.source_stats[stat] if c.source_stats else None,
            c.converted_stats[stat] if c.converted_stats else None,
        )
    artists: dict[str, object] = {}
    for number, (family, by_layer) in enumerate(sorted(series.items())):
        layers = sorted(by_layer)
        colour = f"C{number % 10}"
        source = [np.nan if by_layer[i][0] is None else by_layer[i][0] for i in layers]
        converted = [np.nan if by_layer[i][1] is None else by_layer[i][1] for i in layers]
        (artists[f"{family} source"],) = ax.plot(layers, source, "-o", color=colour, ms=3, label=family)
        (artists[f"{family} converted"],) = ax.plot(layers, converted, "--", color=colour, lw=2, alpha=0.7)
    ax.set_xlabel("layer")
    ax.set_ylabel(stat)
    ax.set_title(f"{tower} tower, per layer {stat} (solid: source, dashed: converted)")
    if series:
        ax.legend(fontsize=6, ncol=2)
    return artists


def plot_histogram(ax, source: torch.Tensor | None, converted: torch.Tensor | None, name: str, bins: int = 60):
    """Value histograms of one tensor, source and converted overlaid; returns the two patch lists."""
    drawn = {}
    arrays = [t.detach().float().reshape(-1).numpy() for t in (source, converted) if t is not None]
    edges = np.histogram_bin_edges(np.concatenate(arrays), bins=bins) if arrays else bins
    if source is not None:
        drawn["source"] = ax.hist(source.detach().float().reshape(-1).numpy(), bins=edges, alpha=0.5, label="source")[2]
    if converted is not None:
        drawn["converted"] = ax.hist(
            converted.detach().float().reshape(-1).numpy(), bins=edges, histtype="step", lw=2, label="converted"
        )[2]
    missing = [side for side, t in (("source", source), ("converted", converted)) if t is None]
    title = _short(name) + (f"  (no {' / '.join(missing)} tensor)" if missing else "")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return drawn


def plot_similarity(ax, logits: torch.Tensor, captions: list[str], title: str, image_labels: list[str]):
    """A heatmap of image × caption logits with the values written in the cells."""
    matrix = logits.detach().float().numpy()
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(captions)), captions, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(image_labels)), image_labels, fontsize=8)
    for (row, column), value in np.ndenumerate(matrix):
        ax.text(column, row, f"{value:.2f}", ha="center", va="center", color="white", fontsize=7)
    ax.set_title(title, fontsize=10)
    return image


def _short(name: str) -> str:
    return name.replace("vision_model.encoder.layers.", "v.").replace("text_model.encoder.layer.", "t.")

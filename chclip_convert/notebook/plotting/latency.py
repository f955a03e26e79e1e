"""06's latency figure: milliseconds per call of each tower against the batch size, a line per runtime."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from chclip_convert.export.latency import PYTORCH, Latency
from chclip_convert.notebook.plotting.weights import TEXT_PT, TITLE_PT, constrained_layout

STYLES = {PYTORCH: {"color": "#37474f", "marker": "s", "linestyle": "--"}}  # the reference; each variant its own
VARIANT_COLOURS = ("#1565c0", "#ef6c00", "#2e7d32")
TOWER_TITLES = {"image": "image embedding (vision_model)", "text": "text embedding (text_model)"}


def draw_latency(figure: Figure, figures: Sequence[Latency], machine: str = "") -> dict[tuple[str, str], object]:
    """A panel per tower, milliseconds per call (log scale) against the batch size, a line per runtime;
    ``machine`` names the CPU measured on in the title. Returns the lines by (tower, runtime)."""
    constrained_layout(figure)
    towers = list(dict.fromkeys(f.tower for f in figures))
    runtimes = list(dict.fromkeys(f.runtime for f in figures))
    batches = sorted({f.batch for f in figures})
    axes = figure.subplots(1, len(towers), squeeze=False)[0]
    colours = iter(VARIANT_COLOURS)
    styles = {r: STYLES.get(r) or {"color": next(colours, "#6a1b9a"), "marker": "o"} for r in runtimes}
    lines = {}
    for ax, tower in zip(axes, towers, strict=True):
        for runtime in runtimes:
            points = sorted((f.batch, f.milliseconds) for f in figures if f.tower == tower and f.runtime == runtime)
            (lines[tower, runtime],) = ax.plot(*zip(*points, strict=True), label=runtime, **styles[runtime])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches], fontsize=TEXT_PT)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, …: a few labels a decade
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.minorticks_off()
        ax.tick_params(axis="y", labelsize=TEXT_PT)
        ax.set_xlabel("batch size", fontsize=TEXT_PT)
        ax.set_ylabel("ms per call (median)", fontsize=TEXT_PT)
        ax.set_title(TOWER_TITLES.get(tower, tower), fontsize=TITLE_PT)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=TEXT_PT)
    if machine:
        figure.suptitle(f"measured on {machine}", fontsize=TEXT_PT)
    return lines

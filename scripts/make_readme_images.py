"""Regenerate the README's pictures from the embedded demo: the key inspector's table (rendered by
headless Chromium, as the widget shows it) and the weight-statistics plots of the damaged copy.

Usage: .venv/bin/python scripts/make_readme_images.py   (needs Debian's chromium)
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from chclip_convert import convert_checkpoint
from chclip_convert.checkpoint import load_checkpoint
from chclip_convert.demo import damaged_copy, write_demo_checkpoint
from chclip_convert.folder import load_folder_state
from chclip_convert.inspection import filter_rows, inspect_checkpoint
from chclip_convert.notebook.plots import plot_layer_curves, plot_stat_scatter
from chclip_convert.notebook.widgets import rows_to_html
from chclip_convert.weight_stats import compare_weights

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    work = Path(tempfile.mkdtemp())
    demo = write_demo_checkpoint(work)
    damaged = damaged_copy(demo)
    report = inspect_checkpoint(damaged)
    rows = filter_rows(report.rows(), status="problems") + filter_rows(report.rows(), text="resblocks.0.attn")
    page = work / "table.html"
    page.write_text(f"<html><body style='margin:8px'><p>{report.summary()}</p>{rows_to_html(rows)}</body></html>")
    chromium = shutil.which("chromium")
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            f"--screenshot={DOCS / 'inspector.png'}",
            "--window-size=1500,330",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
    )
    summary = convert_checkpoint(demo, work / "hf")
    comparisons = compare_weights(load_checkpoint(damaged).state_dict, load_folder_state(summary.output_dir))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    plot_stat_scatter(axes[0], comparisons, "norm")
    plot_layer_curves(axes[1], comparisons, "text", "norm")
    fig.tight_layout()
    fig.savefig(DOCS / "weight_stats.png", dpi=80)
    shutil.rmtree(work)


if __name__ == "__main__":
    main()

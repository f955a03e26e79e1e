"""Every figure the package draws fits JupyterLab's notebook area on a laptop (1400 × 900 px, the file browser
open): at most MAX_PIXELS at 100 % zoom, no text smaller than MIN_TEXT_PX, none cut at the figure's edge (long
names shortened or wrapped), the hover label inside the figure wherever the pointer is, and the numbers of the
similarity heatmap legible on every colour. Drawn on the demo's own tensors, runs and captions."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from matplotlib.backend_bases import MouseEvent
from matplotlib.figure import Figure

from chclip_convert import convert_checkpoint
from chclip_convert.changes.diff import diff_checkpoints
from chclip_convert.changes.drift import measure_drift
from chclip_convert.changes.weight_stats import compare_weights
from chclip_convert.conversion.demo import damaged_copy, write_demo_checkpoint
from chclip_convert.notebook.plotting.diffs import draw_diff
from chclip_convert.notebook.plotting.figures import (
    COMPARISON_SIZE,
    DIFF_SIZE,
    HISTOGRAM_SIZE,
    MAX_PIXELS,
    RUN_CURVES_SIZE,
    RUN_HEATMAPS_SIZE,
    SIMILARITY_SIZE,
    TOOLBAR_PX,
    comparison_view,
    keep_toolbar_strip,
    texts_outside,
    visible_texts,
)
from chclip_convert.notebook.plotting.runs import draw_curves, draw_heatmaps
from chclip_convert.notebook.plotting.weights import (
    MIN_TEXT_PX,
    NAME_CHARS,
    contrast_ratio,
    draw_comparisons,
    draw_similarities,
    plot_histogram,
    renderer_of,
    shorten,
    text_colour_on,
    wrap_name,
)
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS

PX_PER_INCH = 96  # the static SVG's, smaller than ipympl's 100: text is smallest there
LONG_OUTSIDE = "vision_model.embeddings.a_made_up_and_very_long_name_of_an_embedding_table.weight"


def assert_fits(figure: Figure) -> None:
    """The figure is small enough, every text big enough, none outside."""
    width, height = figure.get_size_inches() * figure.dpi
    assert width <= MAX_PIXELS[0] and height <= MAX_PIXELS[1], (width, height)
    small = [
        (t.get_text(), t.get_fontsize())
        for t in visible_texts(figure)
        if t.get_fontsize() * PX_PER_INCH / 72 < MIN_TEXT_PX
    ]
    assert small == []
    assert texts_outside(figure) == []


@pytest.fixture(scope="module")
def comparisons(tmp_path_factory):
    """The damaged demo's comparisons (a changed tensor, one dropped, one cut), and one made-up tensor outside the
    layers whose name is longer than any CLIP's (made once: the tests only read them)."""
    demo = write_demo_checkpoint(tmp_path_factory.mktemp("demo") / "demo")
    converted = convert_checkpoint(demo, tmp_path_factory.mktemp("hf") / "hf").output_dir
    found = compare_weights(damaged_copy(demo), converted)
    embedding = next(c for c in found if c.target == "vision_model.embeddings.patch_embedding.weight")
    return [*found, dataclasses.replace(embedding, target=LONG_OUTSIDE)]


def test_the_statistics_figure_fits_and_names_outside_the_layers_stay_inside(comparisons):
    figure = Figure(figsize=COMPARISON_SIZE)
    draw_comparisons(figure, comparisons)
    assert_fits(figure)
    names = [label.get_text() for label in figure.axes[2].get_yticklabels()]
    assert "vision emb.patch_emb.weight" in names and "text emb.token_type_emb.weight" in names
    (long,) = [name for name in names if "…" in name]
    assert len(long) == NAME_CHARS and long.startswith("vision emb.a_ma") and long.endswith(".weight")


def test_on_ipympl_the_toolbars_strip_is_left_clear(comparisons):
    figure = Figure(figsize=COMPARISON_SIZE)
    keep_toolbar_strip(figure)  # as new_figure does on ipympl's canvas
    draw_comparisons(figure, comparisons)
    assert_fits(figure)
    renderer = renderer_of(figure)
    under = [t.get_text() for t in visible_texts(figure) if t.get_window_extent(renderer).x0 < TOOLBAR_PX]
    assert under == [] and min(ax.get_tightbbox(renderer).x0 for ax in figure.axes) >= TOOLBAR_PX


def test_the_hover_label_stays_inside_the_figure_near_every_edge(comparisons):
    """The pointer on the points nearest each corner of each axes: the label opens toward the figure's centre,
    wraps the name, and lies inside the figure; drawn over the other axes, not under them."""
    figure = Figure(figsize=COMPARISON_SIZE)
    hover = draw_comparisons(figure, comparisons)
    renderer, box = renderer_of(figure), figure.bbox
    figure.canvas.draw_idle = lambda: None  # where the label goes does not wait for a redraw: one at the end
    for x, y in corner_points(hover):
        figure.canvas.callbacks.process("motion_notify_event", MouseEvent("motion_notify_event", figure.canvas, x, y))
        (shown,) = [a for a in hover.annotations.values() if a.get_visible()]
        extent = shown.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1
        assert shown.get_text().split("\n")[0] in hover.text and shown.zorder > max(ax.zorder for ax in figure.axes)
        assert (extent.x0 < x) == (x > box.width / 2) and (extent.y0 < y) == (y > box.height / 2)  # toward the centre
    assert texts_outside(figure) == []


def corner_points(hover) -> list[tuple[float, float]]:
    """In pixels, for each axes, the point of its scatters nearest each of its corners."""
    by_axes: dict[object, list] = {}
    for artist, _ in hover.drawn:
        by_axes.setdefault(artist.axes, []).extend(artist.get_offset_transform().transform(artist.get_offsets()))
    chosen = []
    for ax, points in by_axes.items():
        corners = ax.bbox.corners()
        chosen += [min(points, key=lambda p, c=corner: (p[0] - c[0]) ** 2 + (p[1] - c[1]) ** 2) for corner in corners]
    return chosen


def test_names_are_wrapped_at_dots_and_shortened_in_the_middle():
    assert wrap_name("text_model.encoder.layer.11.attention.output.LayerNorm.weight", 34) == [
        "text_model.encoder.layer.11.", "attention.output.LayerNorm.weight",
    ]  # fmt: skip
    assert shorten("abcdefghij", 10) == "abcdefghij" and shorten("abcdefghijk", 6) == "abc…jk"


def test_the_static_figure_is_no_wider_than_its_output_area(comparisons):
    (image,) = comparison_view(comparisons).children
    assert int(image.layout.width.removesuffix("px")) <= MAX_PIXELS[0] and image.layout.max_width == "100%"


def test_the_similarity_heatmaps_fit_and_every_number_stands_out_from_its_cell(sample_image):
    figure = Figure(figsize=SIMILARITY_SIZE)
    logits = {
        "cn_clip (original)": torch.tensor([[-0.34, 0.05, 0.40, 0.75, 1.10]]),
        "transformers (converted)": torch.tensor([[1.10, 0.75, 0.40, 0.05, -0.34]]),
    }
    images = draw_similarities(figure, sample_image, logits, SAMPLE_CAPTIONS)
    assert_fits(figure)
    for image in images:
        numbers = [text for text in image.axes.texts]
        assert len(numbers) == len(SAMPLE_CAPTIONS)
        for text in numbers:
            cell = image.cmap(image.norm(float(text.get_text())))
            assert contrast_ratio(text.get_color(), cell) >= 4.5, (text.get_text(), text.get_color())
    assert {text.get_color() for image in images for text in image.axes.texts} == {"black", "white"}


def test_black_or_white_is_chosen_by_contrast():
    assert contrast_ratio("black", "white") == pytest.approx(21.0)
    assert text_colour_on("#fde725") == "black" and text_colour_on("#440154") == "white"  # viridis' ends
    assert min(contrast_ratio(text_colour_on((g, g, g)), (g, g, g)) for g in torch.linspace(0, 1, 101).tolist()) >= 4.5


def test_the_diff_figures_fit(workspace):
    reference, epochs = workspace.demo_run()
    demo = workspace.demo_checkpoint()
    for diff in (diff_checkpoints(reference, epochs[2]), diff_checkpoints(demo, damaged_copy(demo))):
        figure = Figure(figsize=DIFF_SIZE)
        draw_diff(figure, diff)
        assert_fits(figure)


def test_the_run_figures_fit(workspace):
    reference, _ = workspace.demo_run()
    drift = measure_drift(reference, [reference.parent])
    short = (RUN_HEATMAPS_SIZE[0], 4.0)  # too short to name every layer: every other one is named
    for size, draw in ((RUN_HEATMAPS_SIZE, draw_heatmaps), (short, draw_heatmaps), (RUN_CURVES_SIZE, draw_curves)):
        figure = Figure(figsize=size)
        draw(figure, drift)
        assert_fits(figure)
        renderer = renderer_of(figure)
        for ax in figure.axes[:-1] if draw is draw_heatmaps else []:  # not the colour bar
            extents = [label.get_window_extent(renderer) for label in ax.get_yticklabels()]
            assert not any(a.overlaps(b) for a, b in itertools.pairwise(extents)), size


def test_the_histogram_fits():
    figure = Figure(figsize=HISTOGRAM_SIZE)
    tensor = torch.linspace(-1, 1, 1000)
    plot_histogram(figure.subplots(), tensor, None, "text_model.encoder.layer.11.attention.output.LayerNorm.weight")
    figure.tight_layout()
    assert_fits(figure)

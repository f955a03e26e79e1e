"""The figures at a laptop's size: Voila in Chromium at 1400 × 900 px. 03's statistics figure (an ipympl canvas)
is no wider than its output area nor taller than the ~700 px in view, ipympl's toolbar floats over blank canvas
only, and the hover label near the top right opens toward the centre; screenshots of it (with and without the
label) and of 04's similarity heatmaps go to artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from support.browser import PAGE_TIMEOUT_MS, SHOTS, open_notebook

from chclip_convert import convert_checkpoint
from chclip_convert.changes.weight_stats import compare_weights
from chclip_convert.conversion.demo import write_demo_checkpoint
from chclip_convert.notebook.plotting.figures import COMPARISON_SIZE, MAX_PIXELS, keep_toolbar_strip
from chclip_convert.notebook.plotting.weights import draw_comparisons

IN_VIEW_PX = 700  # of a 900 px window, what JupyterLab's notebook area shows below its bars

# The figure's size and place, its output area's, in CSS pixels, and whether that area scrolls sideways.
MEASURE = """element => {
    const area = element.closest('.jp-OutputArea-output') || element.parentElement;
    const box = element.getBoundingClientRect(), inside = area.getBoundingClientRect();
    return {width: box.width, height: box.height, left: box.left - inside.left, right: inside.right - box.right,
            scrolls: area.scrollWidth > area.clientWidth};
}"""

CANVAS = ".jupyter-matplotlib-canvas-div canvas"  # the first: the figure's pixels (the second takes the pointer)
DRAWN = """selector => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < data.length; i += 4) { if (data[i] < 200) return true; }
    return false;
}"""
# Whether the canvas is white (or transparent) in its top-left region of the given size.
BLANK = """({selector, width, height}) => {
    const canvas = document.querySelector(selector);
    const data = canvas.getContext('2d').getImageData(0, 0, Math.ceil(width), Math.ceil(height)).data;
    for (let i = 0; i < data.length; i += 4) { if (data[i + 3] > 0 && data[i] < 250) return false; }
    return true;
}"""


def assert_inside_its_area(size: dict) -> None:
    assert size["left"] >= 0 and size["right"] >= 0 and not size["scrolls"], size


def test_the_statistics_figure_fits_a_laptop_window(voila_url, laptop_page, tmp_path):
    laptop = laptop_page
    open_notebook(laptop, voila_url, "03_weight_stats.ipynb")
    widget = laptop.locator(".jupyter-matplotlib").first  # a block as wide as the page: the toolbar and canvas
    canvas = widget.locator(".jupyter-matplotlib-canvas-div")
    canvas.wait_for(timeout=PAGE_TIMEOUT_MS)
    size = canvas.evaluate(MEASURE)
    assert_inside_its_area(size)
    assert size["width"] <= MAX_PIXELS[0] and size["height"] <= min(MAX_PIXELS[1], IN_VIEW_PX), size
    laptop.wait_for_function(DRAWN, arg=CANVAS, timeout=60_000)
    toolbar, box = widget.locator(".jupyter-matplotlib-toolbar").bounding_box(), canvas.bounding_box()
    under = {"width": toolbar["x"] + toolbar["width"] - box["x"], "height": toolbar["y"] + toolbar["height"] - box["y"]}
    assert laptop.evaluate(BLANK, {"selector": CANVAS, **under}), under  # the toolbar floats over blank canvas only
    widget.scroll_into_view_if_needed()
    laptop.screenshot(path=SHOTS / "03_weight_stats_figure_1400x900.png", clip=clip_of(laptop, canvas))
    # The pointer on logit_scale, the top row outside the layers, near the figure's top right: the label opens
    # down and to the left, inside the figure (see the screenshot).
    x, y = point_of("logit_scale", tmp_path)
    box = canvas.bounding_box()
    named = laptop.locator(".hovered-tensor").first
    for dx in (0, -2, 2, -4, 4):
        laptop.mouse.move(box["x"] + x + dx, box["y"] + box["height"] - y)
        laptop.wait_for_timeout(300)
        if named.count():
            break
    named.wait_for(timeout=10_000)
    assert named.inner_text() == "logit_scale"
    laptop.wait_for_timeout(1_000)  # the kernel's drawing of the label reaches the canvas
    laptop.screenshot(path=SHOTS / "03_weight_stats_hover_1400x900.png", clip=clip_of(laptop, canvas))


def test_the_similarity_heatmaps_are_shown(voila_url, laptop_page):
    laptop = laptop_page
    open_notebook(laptop, voila_url, "04_verify_and_save.ipynb")
    heatmaps = laptop.locator(".jp-RenderedImage img").first  # the photo and the two heatmaps, one image
    heatmaps.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert_inside_its_area(heatmaps.evaluate(MEASURE))
    heatmaps.scroll_into_view_if_needed()
    heatmaps.screenshot(path=SHOTS / "04_similarity_1400x900.png")


def clip_of(page, canvas) -> dict:
    """The page's region of the figure with its toolbar: from the output area's left edge to the canvas's right."""
    box = canvas.bounding_box()
    left = canvas.evaluate("e => (e.closest('.jp-OutputArea-output') || e).getBoundingClientRect().left")
    top = box["y"] - 40  # the hovered tensor's line above the figure
    return {"x": left, "y": max(top, 0), "width": box["x"] + box["width"] - left, "height": box["height"] + 40}


def point_of(target: str, folder: Path) -> tuple[float, float]:
    """Where the notebook's first figure (the demo against its conversion) draws ``target`` outside the layers,
    in the difference's axes: pixels from the figure's bottom left, as the kernel draws it here."""
    demo = write_demo_checkpoint(folder / "demo")
    comparisons = compare_weights(demo, convert_checkpoint(demo, folder / "hf").output_dir)
    figure = Figure(figsize=COMPARISON_SIZE)
    keep_toolbar_strip(figure)  # as on the notebook's ipympl canvas
    hover = draw_comparisons(figure, comparisons)
    for artist, drawn in hover.drawn:
        if artist.axes is figure.axes[2] and target in [c.target for c in drawn]:
            index = [c.target for c in drawn].index(target)
            return tuple(artist.get_offset_transform().transform(artist.get_offsets()[index]))
    raise AssertionError(f"{target} is not drawn outside the layers")

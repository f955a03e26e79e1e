"""Notebook 06 in a real browser (Voila and Debian's Chromium): the demo exports itself as the page loads, with
its parity table, the captions ranked by every runtime and the latency figure; a second export, cancelled,
leaves the ONNX folder as it was."""

from __future__ import annotations

from support.browser import PAGE_TIMEOUT_MS, SHOTS, open_notebook
from support.files import tree_sha256

from chclip_convert.export.latency import PYTORCH

FILES = ("model", "text_model", "vision_model")
# The demo exports itself as the page loads: model.onnx traced, the towers cut from it, all checked; under a minute
# on two idle cores.
DEPLOY_PAGE_TIMEOUT_MS = 3 * PAGE_TIMEOUT_MS


def test_the_deploy_page_exports_checks_ranks_and_times_and_cancel_keeps_the_folder(voila_url, page, voila_work):
    open_notebook(page, voila_url, "06_deploy.ipynb", timeout_ms=DEPLOY_PAGE_TIMEOUT_MS)
    table = page.locator("table.parity-table")
    rows = table.locator("tbody tr")
    assert rows.count() == 2 * 3 * len(FILES)  # float32 and int8; batch 1, the larger batch, and it against cn_clip
    assert table.locator("td b:text-is('PASS')").count() == rows.count()
    for name in FILES:
        assert table.locator(f"code:text-is('{name}.onnx')").count() == 3
        assert table.locator(f"code:text-is('{name}_quantized.onnx')").count() == 3
    assert page.locator("text=Exported and verified").count() == 1
    laptop = page.viewport_size
    page.set_viewport_size({"width": 560, "height": laptop["height"]})  # half a laptop: two notebooks side by side
    box = page.locator("div.parity-scroll").first
    sizes = box.evaluate(
        "d => [d.scrollWidth, d.clientWidth, getComputedStyle(d).overflowX, document.documentElement.scrollWidth]"
    )
    verdict = table.locator("td b:text-is('PASS')").first.bounding_box()
    assert sizes[0] > sizes[1] and sizes[2] == "auto", f"the table should scroll in its own box: {sizes}"
    assert verdict["x"] + verdict["width"] <= 560, "the verdicts should stay in view"
    page.set_viewport_size(laptop)
    assert "run the cells" not in page.inner_text("body").lower()
    # the rankings side by side, PyTorch's first; then the latency figure, drawn at its size
    titles = page.locator(".widget-hbox .widget-vbox > .widget-html b").all_inner_texts()
    assert titles[:3] == [PYTORCH, "onnxruntime fp32", "onnxruntime int8"], titles
    assert page.locator("ol.caption-ranking").count() == 3
    figure = page.locator(".jp-RenderedImage img, .output_png img").last
    box = figure.bounding_box()
    assert box["width"] > 600 and box["height"] > 250
    page.screenshot(path=SHOTS / "06_deploy.png", full_page=True)
    page.locator(".widget-vbox:has(table.parity-table)").first.screenshot(path=SHOTS / "06_exporter.png")

    onnx = voila_work / "converted" / "demo_chinese_clip-hf" / "onnx"
    before = tree_sha256(onnx)
    page.locator(".widget-checkbox:has-text('Add float16 files') input").check()
    page.locator(".widget-checkbox:has-text('Replace an existing ONNX folder') input").check()
    export = page.locator("button:has-text('Export')")
    page.wait_for_function("b => !b.disabled", arg=export.element_handle(), timeout=30_000)
    export.click()
    page.locator("text=Exporting model.onnx").wait_for(timeout=120_000)
    page.locator("button:has-text('Cancel')").click()
    page.locator("text=Cancelled: nothing was written").wait_for(timeout=300_000)
    assert tree_sha256(onnx) == before
    assert not [p for p in onnx.parent.iterdir() if "partial" in p.name]
    page.screenshot(path=SHOTS / "06_cancelled.png", full_page=True)

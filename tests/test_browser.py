"""The widget UI in a real browser: Voila serves the notebooks on 127.0.0.1 and Debian's Chromium, driven
by Playwright, types and clicks as a person would. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from conftest import PAGE_TIMEOUT_MS, SHOTS, field, open_notebook
from transformers import ChineseCLIPModel

from chclip_convert.demo import write_demo_checkpoint


def test_convert_in_the_browser(voila_url, page, tmp_path):
    checkpoint = write_demo_checkpoint(tmp_path / "mine")
    output = tmp_path / "converted-in-browser"
    open_notebook(page, voila_url, "01_convert.ipynb")
    page.screenshot(path=SHOTS / "01_convert_before.png", full_page=True)
    field(page, "Checkpoint").fill(str(checkpoint))
    field(page, "Output folder").fill(str(output))
    convert = page.locator("button:has-text('Convert')")
    page.wait_for_function("b => !b.disabled", arg=convert.element_handle(), timeout=30_000)
    convert.click()
    page.locator(f".widget-html:has-text('{output}')").wait_for(timeout=120_000)
    assert "OK: source keys" in page.locator(f".widget-html:has-text('{output}')").inner_text()
    page.locator(".progress-bar-success").wait_for(timeout=30_000)
    page.screenshot(path=SHOTS / "01_convert_after.png", full_page=True)
    model = ChineseCLIPModel.from_pretrained(output)
    assert model.config.vision_config.image_size == 64


def test_bad_path_shows_inline_message_and_keeps_convert_disabled(voila_url, page, tmp_path):
    open_notebook(page, voila_url, "01_convert.ipynb")
    field(page, "Checkpoint").fill(str(tmp_path / "no-such-checkpoint.pt"))
    page.locator("text=no such file").wait_for(timeout=30_000)
    assert page.locator("button:has-text('Convert')").is_disabled()
    page.screenshot(path=SHOTS / "01_convert_bad_path.png", full_page=True)


def test_inspector_shows_its_table(voila_url, page):
    open_notebook(page, voila_url, "02_inspect_keys.ipynb")
    table = page.locator("table:has-text('visual.adapter.weight')")
    table.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert "unused" in table.inner_text() and "shape_mismatch" in table.inner_text()
    page.screenshot(path=SHOTS / "02_inspect_keys.png", full_page=True)

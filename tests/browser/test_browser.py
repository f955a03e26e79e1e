"""The widget UI in a real browser: Voila serves the notebooks on 127.0.0.1 and Debian's Chromium, driven
by Playwright, types and clicks as a person would. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support.browser import PAGE_TIMEOUT_MS, SHOTS, field, open_notebook
from support.converted import reload_strictly

from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, demo_vocabulary, source_shapes, write_demo_checkpoint


@pytest.fixture(scope="module")
def slow_checkpoint(tmp_path_factory) -> Path:
    """A demo-format checkpoint wide enough (about 400 MB) that its conversion lasts long enough to cancel."""
    folder = tmp_path_factory.mktemp("wide")
    arch = replace(DEMO_ARCHITECTURE, vision_width=768, vision_intermediate=3072, vision_layers=12, text_layers=2)
    shapes = source_shapes(arch, len(demo_vocabulary()))
    (folder / "vocab.txt").write_text("\n".join(demo_vocabulary()) + "\n")
    torch.save({"state_dict": {k: torch.ones(shape) for k, shape in shapes.items()}}, folder / "wide.pt")
    return folder / "wide.pt"


def test_the_app_opens_clean_and_converts_a_checkpoint_picked_by_browsing(voila_url, voila_work, page, tmp_path):
    checkpoint = write_demo_checkpoint(tmp_path / "mine")
    started = time.monotonic()
    open_notebook(page, voila_url, "app.ipynb")
    print(f"app page showed its widgets after {time.monotonic() - started:.1f} s")
    # No notebook prose about JupyterLab, no red message: nothing has been converted or refused yet.
    assert "JupyterLab" not in page.inner_text("body") and page.locator("pre[style*='#b71c1c']").count() == 0
    assert str(voila_work) in page.inner_text("body")
    page.screenshot(path=SHOTS / "app_start.png", full_page=True)
    # Browse: type the folder, open the listing, pick the checkpoint from it.
    field(page, "Checkpoint").fill(str(checkpoint.parent))
    page.locator("button:has-text('Browse…')").first.click()
    listing = page.locator("select").first
    listing.locator("option", has_text=checkpoint.name).wait_for(timeout=30_000)
    page.screenshot(path=SHOTS / "app_browse.png", full_page=True)
    listing.select_option(label=next(o for o in listing.locator("option").all_inner_texts() if checkpoint.name in o))
    page.wait_for_function(
        "v => document.querySelector('.widget-text input').value === v", arg=str(checkpoint), timeout=30_000
    )
    output = tmp_path / "converted-in-browser"
    field(page, "Output folder").fill(str(output))
    convert = page.locator("button:has-text('Convert')")
    page.wait_for_function("b => !b.disabled", arg=convert.element_handle(), timeout=30_000)
    convert.click()
    page.locator(".progress-bar-success").wait_for(timeout=120_000)
    assert "OK: source keys" in page.locator(f".widget-html:has-text('{output}')").first.inner_text()
    assert "tensors" in page.inner_text("body") and "done in" in page.inner_text("body")
    # The folder just written is the result, not a problem; the next steps are offered.
    assert page.locator("pre[style*='#b71c1c']").count() == 0 and "Converted into this folder" in page.inner_text(
        "body"
    )
    page.screenshot(path=SHOTS / "app_converted.png", full_page=True)
    reload_strictly(output)
    # The next notebook opens in place, on the checkpoint chosen here.
    page.locator("a:has-text('02_inspect_keys.ipynb')").click()
    page.wait_for_url("**/voila/render/02_inspect_keys.ipynb", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".jupyter-widgets", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_function(
        "v => [...document.querySelectorAll('.widget-text input')].some(i => i.value === v)",
        arg=str(checkpoint),
        timeout=PAGE_TIMEOUT_MS,
    )


def test_cancel_in_the_browser_leaves_nothing_behind(voila_url, page, slow_checkpoint, tmp_path):
    open_notebook(page, voila_url, "app.ipynb")
    field(page, "Checkpoint").fill(str(slow_checkpoint))
    output = tmp_path / "cancelled"
    field(page, "Output folder").fill(str(output))
    convert = page.locator("button:has-text('Convert')")
    page.wait_for_function("b => !b.disabled", arg=convert.element_handle(), timeout=30_000)
    convert.click()
    cancel = page.locator("button:has-text('Cancel')")
    page.wait_for_function("b => !b.disabled", arg=cancel.element_handle(), timeout=30_000)
    cancel.click()
    page.locator("text=Cancelled: nothing was written").wait_for(timeout=120_000)
    page.screenshot(path=SHOTS / "app_cancelled.png", full_page=True)
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    assert not convert.is_disabled()


def test_bad_path_shows_inline_message_and_keeps_convert_disabled(voila_url, page, tmp_path):
    open_notebook(page, voila_url, "app.ipynb")
    field(page, "Checkpoint").fill(str(tmp_path / "no-such-checkpoint.pt"))
    page.locator("text=no such file").wait_for(timeout=30_000)
    assert page.locator("button:has-text('Convert')").is_disabled()
    page.screenshot(path=SHOTS / "app_bad_path.png", full_page=True)
    # Fixed, the message goes.
    field(page, "Checkpoint").fill(str(write_demo_checkpoint(tmp_path / "fine")))
    page.locator("text=no such file").wait_for(state="detached", timeout=30_000)

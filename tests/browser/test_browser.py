"""The widget UI in a real browser: Voila serves the notebooks on 127.0.0.1 and Debian's Chromium, driven
by Playwright, types and clicks as a person would. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support.browser import PAGE_TIMEOUT_MS, PENDING_CELL, SHOTS, field, open_notebook
from support.converted import reload_strictly

from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, demo_vocabulary, source_shapes, write_demo_checkpoint
from chclip_convert.conversion.pipeline import FINISHING, READING
from chclip_convert.notebook.converter import LOADING
from chclip_convert.progress import WRITING

# Records each new text of an <i> status line under the converter (the stage shown, in italics) in
# window.chclipStages, as the page changes.
STAGES_RECORDER = """() => {
    window.chclipStages = [];
    new MutationObserver(() => {
        for (const line of document.querySelectorAll('.widget-html i')) {
            const text = line.textContent;
            if (window.chclipStages[window.chclipStages.length - 1] !== text) window.chclipStages.push(text);
        }
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


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
    # Every stage is said while it lasts (the first conversion loads torch and transformers before anything shows
    # in the bar): what the status line says is recorded from the click on.
    page.evaluate(STAGES_RECORDER)
    convert.click()
    page.locator(".progress-bar-success").wait_for(timeout=120_000)
    said = page.evaluate("() => window.chclipStages")
    stages = [LOADING, READING, WRITING, FINISHING]  # as the status line says them: "Loading the converter's …"
    assert said == [f"{stage[:1].upper()}{stage[1:]}…" for stage in stages], said
    assert "OK: source keys" in page.locator(f".widget-html:has-text('{output}')").first.inner_text()
    assert "tensors" in page.inner_text("body") and "done in" in page.inner_text("body")
    # The folder just written is the result, not a problem; the next steps are offered.
    assert page.locator("pre[style*='#b71c1c']").count() == 0 and "Converted into this folder" in page.inner_text(
        "body"
    )
    page.screenshot(path=SHOTS / "app_converted.png", full_page=True)
    reload_strictly(output)
    # The next notebook opens in a tab of its own, on the checkpoint chosen here; the app stays as it is.
    with page.context.expect_page() as opened:
        page.locator("a:has-text('02_inspect_keys.ipynb')").click()
    following = opened.value
    following.wait_for_url("**/voila/render/02_inspect_keys.ipynb", timeout=PAGE_TIMEOUT_MS)
    following.wait_for_selector(".jupyter-widgets", timeout=PAGE_TIMEOUT_MS)
    following.wait_for_function(
        "v => [...document.querySelectorAll('.widget-text input')].some(i => i.value === v)",
        arg=str(checkpoint),
        timeout=PAGE_TIMEOUT_MS,
    )
    assert "OK: source keys" in page.locator(f".widget-html:has-text('{output}')").first.inner_text()


@pytest.mark.parametrize("name", ["02_inspect_keys.ipynb", "04_verify_and_save.ipynb"])
def test_a_voila_page_shows_itself_while_it_loads_and_says_nothing_of_cells(voila_url, laptop_page, name):
    page = laptop_page
    page.goto(f"{voila_url}/voila/render/{name}", timeout=PAGE_TIMEOUT_MS)
    # The top (the checkpoint's picker) shows while later cells still run, each a placeholder until it has.
    page.wait_for_selector(".widget-text input", timeout=PAGE_TIMEOUT_MS)
    still_running = page.locator(PENDING_CELL).count()
    page.screenshot(path=SHOTS / f"voila_loading_{name.removesuffix('.ipynb')}.png")
    page.wait_for_selector(PENDING_CELL, state="detached", timeout=PAGE_TIMEOUT_MS)
    text = page.inner_text("body").lower()
    assert still_running > 0, "the page showed only once every cell had run"
    for said in ("run the cells", "run this cell", "the next cell", "run all"):
        assert said not in text, said  # a page without cells says nothing of them


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

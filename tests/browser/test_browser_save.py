"""Notebook 04's save widget in a real browser (Voila and Debian's Chromium): choose a folder, a dtype and a shard
size, click Save, and read the result as a count and a size with the file names folded away."""

from __future__ import annotations

import torch
from support.browser import PAGE_TIMEOUT_MS, SHOTS, field, open_notebook
from support.converted import reload_strictly


def test_save_writes_the_chosen_dtype_and_shards_and_folds_the_file_list(voila_url, page, tmp_path):
    open_notebook(page, voila_url, "04_verify_and_save.ipynb")
    # The demo saves itself once as the page loads: bfloat16 in 1 MB shards, its file list folded.
    page.locator("text=weight shards + index").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert page.locator("text=all checks pass: True").count() == 1
    page.screenshot(path=SHOTS / "04_verify_and_save.png", full_page=True)
    target = tmp_path / "saved-fp16"
    field(page, "Folder").first.fill(str(target))
    page.locator(".widget-dropdown:has(label:text-is('dtype')) select").select_option("float16")
    page.locator(".widget-text:has(label:text-is('Shard size')) input").fill("no sharding")
    save = page.locator("button:has-text('Save')")
    page.wait_for_function("b => !b.disabled", arg=save.element_handle(), timeout=30_000)
    save.click()
    result = page.locator(f".widget-html:has-text('Saved {target}')")
    result.wait_for(timeout=120_000)
    assert "1 weight file," in result.inner_text() and "float16" in result.inner_text()
    # The names are folded away until asked for.
    files = page.locator(".widget-html:has-text('model.safetensors') li").filter(has_text="config.json")
    assert not files.last.is_visible()
    page.screenshot(path=SHOTS / "04_saved.png", full_page=True)
    assert reload_strictly(target).dtype == torch.float16
    assert sorted(p.name for p in target.glob("*.safetensors")) == ["model.safetensors"]

"""Notebook 05 in a real browser (Voila and Debian's Chromium): the demo run's heatmaps and verdicts show, and
choosing two epochs and clicking Convert converts both with one progress bar, each checked."""

from __future__ import annotations

from support.browser import PAGE_TIMEOUT_MS, SHOTS, open_notebook


def test_the_run_page_shows_what_moved_and_converts_chosen_epochs(voila_url, page, voila_work):
    open_notebook(page, voila_url, "05_training_run.ipynb")
    # The demo converts its last epoch as the page loads; by then every figure above it is drawn.
    page.locator(".epoch-outcomes:has-text('epoch3.pt')").wait_for(timeout=PAGE_TIMEOUT_MS)
    # the run's summary, said twice: for the epochs, and again with the demo's average beside them
    assert page.locator("text=vision: unchanged in every epoch").count() == 2
    assert page.locator("text=text: moved: layers 9–11, projection").count() == 2
    assert page.locator(".widget-image").count() == 3  # the heatmaps, the curves, the heatmaps with the average
    heatmaps = page.locator(".widget-image").first.bounding_box()
    assert heatmaps["width"] > 600 and heatmaps["height"] > 400  # drawn at its size, not collapsed
    page.screenshot(path=SHOTS / "05_training_run.png", full_page=True)
    page.locator(".widget-image").first.screenshot(path=SHOTS / "05_heatmaps.png")

    page.locator(".widget-select-multiple select").first.select_option(  # the converter's; the averager's is below
        label=["epoch1.pt — epoch 1 · step 125", "epoch2.pt — epoch 2 · step 250"]
    )
    page.locator(".epoch-outcomes").wait_for(state="detached", timeout=30_000)  # a new choice clears the result
    page.locator("button:has-text('Convert')").click()
    outcomes = page.locator(".epoch-outcomes:has-text('epoch2.pt')")
    outcomes.wait_for(timeout=120_000)
    text = outcomes.inner_text()
    assert text.count("\tconverted\t") == 2 and text.count("checked: all 399 tensors bit-identical") == 2
    assert page.locator("text=2 epochs done").count() == 1
    page.screenshot(path=SHOTS / "05_converted.png", full_page=True)
    converted = voila_work / "converted"
    assert sorted(p.name for p in converted.iterdir() if p.name.startswith("demo-run-epoch")) == [
        "demo-run-epoch1-hf", "demo-run-epoch2-hf", "demo-run-epoch3-hf",
    ]  # fmt: skip

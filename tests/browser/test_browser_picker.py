"""The path picker in a real browser (Voila, Chromium at 1400 × 900): a checkpoint in a hidden folder, as many
keep them under ``~/.cache``, is reached by typing its folder while the listing is open and ticking Show hidden."""

from __future__ import annotations

from support.browser import SHOTS, field, open_notebook


def test_a_hidden_checkpoint_in_a_hidden_folder_is_reached_by_typing_and_show_hidden(voila_url, page, tmp_path):
    cache = tmp_path / ".cache" / "chclip"
    cache.mkdir(parents=True)
    checkpoint = cache / ".epoch3.pt"  # the listing looks at names only: any bytes do
    checkpoint.write_bytes(b"not read by the listing")
    page.set_viewport_size({"width": 1400, "height": 900})
    open_notebook(page, voila_url, "app.ipynb")
    page.locator("button:has-text('Browse…')").first.click()
    show_hidden = page.get_by_label("Show hidden").first  # the Checkpoint picker's, in its browse panel's row
    show_hidden.check()
    box = show_hidden.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1400  # in reach, not pushed off the page
    # Typed while the listing is open, the hidden folder is listed at once; the field's message names it.
    field(page, "Checkpoint").fill(str(cache))
    page.locator(f"code:text-is('{cache}')").wait_for(timeout=30_000)
    page.locator(f"pre:has-text('{cache}: is a folder; give the checkpoint file (.pt) inside it.')").wait_for(
        timeout=30_000
    )
    listing = page.locator("select").first
    option = listing.locator("option", has_text=checkpoint.name)
    option.wait_for(timeout=30_000)
    page.screenshot(path=SHOTS / "app_browse_hidden.png", full_page=True)
    listing.select_option(label=option.inner_text())
    page.wait_for_function(
        "v => document.querySelector('.widget-text input').value === v", arg=str(checkpoint), timeout=30_000
    )
    page.locator("pre:has-text('is a folder')").wait_for(state="detached", timeout=30_000)


def test_in_half_a_laptops_width_the_field_gives_way_and_the_buttons_keep_their_labels(voila_url, page):
    """Two notebooks side by side leave each about 560 px: the path field shrinks, Browse… and the browse panel's
    buttons keep their full labels (squeezed, "Browse…" showed as "B…")."""
    page.set_viewport_size({"width": 560, "height": 900})
    open_notebook(page, voila_url, "app.ipynb")
    browse = page.locator("button:has-text('Browse…')").first
    browse.click()
    buttons = [browse, page.locator("button:has-text('Up')").first, page.locator("button:has-text('Home')").first]
    for button in buttons:
        clipped = button.evaluate("b => b.scrollWidth > b.clientWidth")
        box = button.bounding_box()
        assert not clipped and box["x"] + box["width"] <= 560, button.inner_text()
    for widget in (page.locator(".widget-text:has-text('Vocabulary')"), page.get_by_label("Drop unused source keys")):
        box = widget.first.bounding_box()  # the fields give way, the options go on to a new line: all in view
        assert box["x"] + box["width"] <= 560, box
    page.screenshot(path=SHOTS / "app_picker_narrow.png", full_page=True)

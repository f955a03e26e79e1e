"""One naming in every search, in a real browser (Voila and Debian's Chromium): 03's histogram search finds
tensors by their original name and clears what it showed when nothing matches; 02's grids keep the sort a
header click chose when a filter changes, and fit a notebook area 1000 px wide (JupyterLab's, with its file
browser open, at a 1280-1400 px screen: Voila has no side panel, so the viewport stands in for it)."""

from __future__ import annotations

import pytest
from support.browser import PAGE_TIMEOUT_MS, SHOTS, field, open_notebook

from chclip_convert.changes.diff import diff_checkpoints
from chclip_convert.conversion.demo import write_demo_checkpoint
from chclip_convert.conversion.inspection import filter_rows, inspect_checkpoint
from chclip_convert.notebook import diff_view
from chclip_convert.notebook.key_grid import COLUMNS
from chclip_convert.notebook.workspace import Workspace

WAIT_MS = 60_000
NARROW = {"width": 1000, "height": 1000}
# The geometry of a grid: its table's right edge, its scroll box's, its headers' and the page's widths.
_GEOMETRY = """box => {
    const right = selector => box.querySelector(selector).getBoundingClientRect().right;
    const heads = [...box.querySelectorAll('.dt-scroll-head th')].map(th => {
        const r = th.getBoundingClientRect();
        return [th.innerText.trim(), r.left, r.right];
    });
    return {table: right('.dt-scroll-body table'), box: right('.dt-scroll'), heads,
            page: document.documentElement.scrollWidth, window: document.documentElement.clientWidth};
}"""


@pytest.fixture
def demo_rows(tmp_path) -> list[dict]:
    """The rows of 02's first inspector: the intact demo, as the notebook writes it."""
    return inspect_checkpoint(write_demo_checkpoint(tmp_path / "demo")).rows()


def cells(section, width: int) -> list[list[str]]:
    """The cells of every row of the grid in ``section`` (not DataTables' "No data" line), in the order shown."""
    rows = section.locator(".dt-scroll-body tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.innerText.trim()))"
    )
    return [row for row in rows if len(row) == width]


def wait_for_rows(section, count: int) -> None:
    section.page.wait_for_function(
        "([box, n]) => box.querySelectorAll('.dt-scroll-body tbody tr td:nth-child(2)').length === n",
        arg=[section.element_handle(), count],
        timeout=WAIT_MS,
    )


def sort_by(section, name: str, direction: str) -> None:
    """Click the header of column ``name`` (once ascending, twice descending), waiting for each sort to show."""
    header = section.locator(f".dt-scroll-head th:has-text('{name}')").first
    for step in ("ascending", "descending")[: 1 + (direction == "descending")]:
        header.click()
        section.page.wait_for_function(
            "([th, direction]) => th.getAttribute('aria-sort') === direction",
            arg=[header.element_handle(), step],
            timeout=WAIT_MS,
        )


def sorted_by(section, name: str) -> str | None:
    return section.locator(f".dt-scroll-head th:has-text('{name}')").first.get_attribute("aria-sort")


def assert_fits(section) -> None:
    """Every column of the grid within its box, the note header in sight, and no page-wide horizontal scroll."""
    geometry = section.evaluate(_GEOMETRY)
    assert geometry["table"] <= geometry["box"] + 1, geometry
    assert all(right <= geometry["box"] + 1 for _, _, right in geometry["heads"]), geometry
    note = next(head for head in geometry["heads"] if head[0] == "note")
    assert note[2] - note[1] >= 30, f"the note column is squeezed: {geometry}"
    assert section.locator(".dt-scroll-head th:has-text('note')").first.is_visible()
    assert geometry["page"] <= geometry["window"], f"the page scrolls sideways: {geometry}"


def test_histogram_search_finds_original_names_and_clears_on_no_match(voila_url, page):
    page.set_viewport_size(NARROW)
    open_notebook(page, voila_url, "03_weight_stats.ipynb")
    picker = page.locator(".chclip-histogram").first
    picker.wait_for(timeout=PAGE_TIMEOUT_MS)
    image = picker.locator("img")
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=WAIT_MS)
    search = field(picker, "search")
    search.fill("resblocks.3")  # the original name: vision layer 3's tensors, layer 3's only
    picker.locator(".widget-html:has-text('16 of 399 tensors')").wait_for(timeout=WAIT_MS)
    listed = picker.locator("select option").evaluate_all("options => options.map(o => o.textContent)")
    assert "vision_model.encoder.layers.3.self_attn.q_proj.weight" in listed and len(listed) == 16
    assert all(name.startswith("vision_model.encoder.layers.3.") for name in listed)

    search.fill("resblocks.99")
    said = "no tensor matches resblocks.99 (0 of 399 tensors)"
    picker.locator(f".widget-html:has-text('{said}')").wait_for(timeout=WAIT_MS)
    page.wait_for_function("img => img.naturalWidth === 0", arg=image.element_handle(), timeout=WAIT_MS)
    assert picker.locator("select option").count() == 0
    assert picker.locator("code", has_text="_model.").count() == 0  # the caption naming the old tensor: gone
    page.screenshot(path=SHOTS / "03_histogram_no_match.png")


def test_grids_keep_their_sort_across_filters_and_fit_1000_px(voila_url, page, demo_rows, tmp_path):
    page.set_viewport_size(NARROW)
    open_notebook(page, voila_url, "02_inspect_keys.ipynb")
    inspector = page.locator(".chclip-key-inspector").first
    inspector.locator(".dt-scroll-body tbody tr").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert_fits(inspector)
    assert_fits(page.locator(".chclip-key-inspector").last)  # the damaged copy's: long notes

    sort_by(inspector, "key", "descending")
    field(inspector, "name").fill("resblocks.3")
    layer_3 = filter_rows(demo_rows, text="resblocks.3")
    inspector.locator(f".widget-html:has-text('{len(layer_3)} of {len(demo_rows)} keys')").wait_for(timeout=WAIT_MS)
    wait_for_rows(inspector, len(layer_3))
    keys = [row[1] for row in cells(inspector, len(COLUMNS))]
    assert sorted(keys) == sorted(row["key"] for row in layer_3)
    assert keys == sorted(keys, key=str.lower, reverse=True) and sorted_by(inspector, "key") == "descending"
    assert_fits(inspector)
    page.screenshot(path=SHOTS / "02_key_grid_sorted_narrow.png")

    inspector.locator("select").select_option("transformed")  # a second change: still sorted
    transformed = filter_rows(demo_rows, status="transformed", text="resblocks.3")
    wait_for_rows(inspector, len(transformed))
    keys = [row[1] for row in cells(inspector, len(COLUMNS))]
    assert keys == sorted((row["key"] for row in transformed), key=str.lower, reverse=True)

    field(inspector, "name").fill("resblocks.99")
    inspector.locator(".widget-html:has-text('no key matches resblocks.99')").wait_for(timeout=WAIT_MS)
    wait_for_rows(inspector, 0)

    workspace = Workspace(tmp_path / "work")  # the comparison the notebook shows: the demo and its run's third epoch
    diff = diff_checkpoints(workspace.demo_checkpoint(), workspace.demo_run()[1][2])
    section = page.locator(".chclip-diff")
    section.wait_for(timeout=PAGE_TIMEOUT_MS)  # Voila shows each cell's output as it runs: this one comes last
    section.page.wait_for_function(  # the notebook compares the demo at once: its grid fills
        "box => box.querySelectorAll('.dt-scroll-body tbody tr td:nth-child(2)').length > 0",
        arg=section.element_handle(),
        timeout=PAGE_TIMEOUT_MS,
    )
    section.scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "02_diff_narrow.png", full_page=True)
    assert_fits(section)
    column = diff_view.COLUMNS.index("relative change")
    sort_by(section, "relative change", "descending")
    section.locator(".widget-dropdown select").select_option("not equal")
    wait_for_rows(section, len(diff.differs))
    changes = [float(row[column]) for row in cells(section, len(diff_view.COLUMNS))]
    assert changes == sorted(changes, reverse=True) and sorted_by(section, "relative change") == "descending"

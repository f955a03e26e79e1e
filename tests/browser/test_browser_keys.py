"""The key grid of 02_inspect_keys.ipynb in a real browser (Voila and Debian's Chromium): it shows every key of
the demo, sorts on a header click, narrows by status and by name, and exports the rows it shows as CSV. The
expected rows come from the same report computed here, so the test holds for any number of demo layers. Its
comparison section shows the demo against the demo run's third epoch, checked against the same diff computed
here."""

from __future__ import annotations

import csv
import re

import pytest
from support.browser import PAGE_TIMEOUT_MS, SHOTS, open_notebook

from chclip_convert.changes.diff import diff_checkpoints, part_of
from chclip_convert.conversion.demo import DAMAGE, write_demo_checkpoint
from chclip_convert.conversion.inspection import filter_rows, inspect_checkpoint
from chclip_convert.notebook import diff_view
from chclip_convert.notebook.key_grid import COLUMNS, CSV_NAME, STATUS_COLOURS, row_cells
from chclip_convert.notebook.workspace import Workspace

WAIT_MS = 30_000


@pytest.fixture
def demo_rows(tmp_path) -> list[dict]:
    """The rows of the notebook's first inspector: the intact demo, as the notebook writes it."""
    return inspect_checkpoint(write_demo_checkpoint(tmp_path / "demo")).rows()


def inspectors(page):
    inspector = page.locator(".chclip-key-inspector")
    inspector.last.locator(".dt-scroll-body tbody tr").first.wait_for(timeout=PAGE_TIMEOUT_MS)
    return inspector


def shown(inspector) -> list[list[str]]:
    """The cells of every row the grid holds (scrolled out of sight or not), in the order shown."""
    cells = inspector.locator(".dt-scroll-body tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.innerText.trim()))"
    )
    return [row for row in cells if len(row) == len(COLUMNS)]  # not DataTables' "No data" line


def wait_for_count(inspector, count: int, total: int) -> None:
    """Wait until the inspector says it shows ``count`` of ``total`` keys, and its grid holds that many rows."""
    inspector.locator(f".widget-html:has-text('{count} of {total} keys')").wait_for(timeout=WAIT_MS)
    wait_for_rows(inspector, count)


def wait_for_rows(inspector, count: int) -> None:
    inspector.page.wait_for_function(
        "([box, n]) => box.querySelectorAll('.dt-scroll-body tbody tr td:nth-child(2)').length === n",
        arg=[inspector.element_handle(), count],
        timeout=WAIT_MS,
    )


def rgb(colour: str) -> str:
    """``#e8f5e9`` as the browser reports it: ``rgb(232, 245, 233)``."""
    return f"rgb({', '.join(str(int(colour[i : i + 2], 16)) for i in (1, 3, 5))})"


def sort_by(inspector, name: str, direction: str) -> None:
    """Click the header of column ``name`` and wait until the grid says it is sorted in ``direction``."""
    header = inspector.locator(f".dt-scroll-head th:has-text('{name}')").first
    header.click()
    inspector.page.wait_for_function(
        "([th, direction]) => th.getAttribute('aria-sort') === direction",
        arg=[header.element_handle(), direction],
        timeout=WAIT_MS,
    )


def test_key_grid_shows_sorts_filters_and_exports(voila_url, page, demo_rows, tmp_path):
    open_notebook(page, voila_url, "02_inspect_keys.ipynb")
    grid = inspectors(page).first
    total = len(demo_rows)
    assert shown(grid) == [row_cells(row) for row in demo_rows]  # every key, in the report's order
    height = grid.locator(".dt-scroll-body").bounding_box()["height"]
    assert 100 < height < 500, f"the rows scroll inside a box of fixed height, not {height} px"
    colours = grid.locator(".dt-scroll-body tbody tr").evaluate_all("rows => rows.map(r => r.style.backgroundColor)")
    assert colours == [rgb(STATUS_COLOURS[row["status"]]) for row in demo_rows]

    sort_by(grid, "status", "ascending")
    statuses = [row[2] for row in shown(grid)]
    assert statuses == sorted(statuses) and statuses != [row["status"] for row in demo_rows]
    sort_by(grid, "status", "descending")
    assert [row[2] for row in shown(grid)] == sorted(statuses, reverse=True)

    grid.locator("select").select_option("transformed")
    transformed = filter_rows(demo_rows, status="transformed")
    wait_for_count(grid, len(transformed), total)
    assert sorted(map(tuple, shown(grid))) == sorted(tuple(row_cells(row)) for row in transformed)

    grid.locator("select").select_option("all")
    grid.locator(".widget-text:has(label:text-is('name')) input").fill("resblocks.1")
    layer_1 = filter_rows(demo_rows, text="resblocks.1")
    wait_for_count(grid, len(layer_1), total)
    names = [f"{row[1]} {row[5]}" for row in shown(grid)]
    assert sorted(names) == sorted(f"{row['key']} {row['counterpart']}" for row in layer_1)
    assert all(re.search(r"(resblocks|layers)\.1\.", name) for name in names)
    assert not any(re.search(r"(resblocks|layers)\.1\d", name) for name in names)  # not layers 10 and 11
    page.screenshot(path=SHOTS / "02_key_grid_layer_1.png", full_page=True)

    shown_before = shown(grid)
    sort_by(grid, "key", "ascending")
    on_screen = shown(grid)
    keys = [row[1] for row in on_screen]
    assert keys == sorted(keys, key=str.lower) != [row[1] for row in shown_before]  # DataTables ignores case
    with page.expect_download(timeout=WAIT_MS) as download:
        grid.locator("button:has-text('Export CSV')").click()
    assert download.value.suggested_filename == f"{CSV_NAME}.csv"
    saved = tmp_path / "keys.csv"
    download.value.save_as(saved)
    with saved.open(encoding="utf-8-sig", newline="") as file:
        exported = list(csv.reader(file))
    assert exported == [list(COLUMNS), *on_screen]  # the filtered rows, in the order shown


def test_key_grid_shows_a_bad_regex_inline_and_the_damaged_copy_its_problems(voila_url, page):
    open_notebook(page, voila_url, "02_inspect_keys.ipynb")
    grid = inspectors(page).first
    grid.locator(".widget-checkbox:has-text('regex') input").check()
    grid.locator(".widget-text:has(label:text-is('name')) input").fill("resblocks.(1")
    message = grid.locator(".widget-html:has-text('not a regular expression')")
    message.wait_for(timeout=WAIT_MS)
    wait_for_rows(grid, 0)
    assert "missing ), unterminated subpattern" in message.inner_text() and shown(grid) == []
    assert page.locator("text=Traceback").count() == 0
    page.screenshot(path=SHOTS / "02_key_grid_bad_regex.png")

    damaged = inspectors(page).last  # the damaged copy's keys
    statuses = {row[1]: row[2] for row in shown(damaged)}
    assert statuses[DAMAGE["added"]] == "unused" and "shape_mismatch" in statuses.values()
    damaged.screenshot(path=SHOTS / "02_inspect_keys.png")


def diff_cells(section) -> list[list[str]]:
    """The cells of every row the comparison's grid holds, in the order shown."""
    cells = section.locator(".dt-scroll-body tbody tr").evaluate_all(
        "rows => rows.map(row => [...row.cells].map(cell => cell.innerText.trim()))"
    )
    return [row for row in cells if len(row) == len(diff_view.COLUMNS)]


def test_the_comparison_shows_what_the_demo_run_moved(voila_url, page, tmp_path):
    workspace = Workspace(tmp_path / "work")  # the same files the notebook writes into its own work folder
    diff = diff_checkpoints(workspace.demo_checkpoint(), workspace.demo_run()[1][2])
    column = {name: index for index, name in enumerate(diff_view.COLUMNS)}
    page.set_viewport_size({"width": 1300, "height": 1600})  # the section whole in one screenshot
    open_notebook(page, voila_url, "02_inspect_keys.ipynb")
    section = page.locator(".chclip-diff")
    section.locator(f".widget-html:has-text('{diff.verdict()}')").wait_for(timeout=PAGE_TIMEOUT_MS)
    assert f"{len(diff.differs)} of {len(diff.changes)} tensors differ" in diff.verdict()
    wait_for_rows(section, len(diff.changes))
    status = {row[column["key"]]: row[column["status"]] for row in diff_cells(section)}
    moved = max(diff.differs, key=lambda change: change.relative_change).key
    assert status[moved] == "differs"
    assert sorted(key for key, value in status.items() if value == "differs") == sorted(c.key for c in diff.differs)
    figure = section.locator("img").first  # the figure, as an SVG image
    figure.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=figure.element_handle(), timeout=WAIT_MS)
    section.screenshot(path=SHOTS / "02_diff.png")

    section.locator(".widget-dropdown select").select_option("not equal")
    wait_for_rows(section, len(diff.differs))
    sort_by(section, "relative change", "ascending")
    sort_by(section, "relative change", "descending")
    changes = [float(row[column["relative change"]]) for row in diff_cells(section)]
    assert changes == sorted(changes, reverse=True) and diff_cells(section)[0][column["key"]] == moved
    sort_by(section, "layer", "ascending")
    layers = [row[column["layer"]] for row in diff_cells(section)]
    numbers = [int(layer) for layer in layers if layer.isdigit()]
    assert numbers == sorted(numbers) and numbers[-1] == max(part_of(c.key).layer for c in diff.differs)
    assert layers[: len(numbers)] == [str(n) for n in numbers]  # layer numbers before the named sections
    section.screenshot(path=SHOTS / "02_diff_moved.png")

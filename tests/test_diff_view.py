"""The comparison widget of 02_inspect_keys.ipynb and its figure, driven as a person would (set paths, click
Compare, filter), without a browser. The expected moves come from the demo run's own description
(:func:`chclip_convert.conversion.demo.moved_by_demo_run`) and the expected plot values from the diff's parts, so
nothing here depends on the demo's sizes or random values."""

from __future__ import annotations

import math

import pytest
from matplotlib.figure import Figure

from chclip_convert.changes.diff import diff_checkpoints
from chclip_convert.conversion.demo import DAMAGE, damaged_copy, moved_by_demo_run
from chclip_convert.conversion.inspection import inspect_checkpoint
from chclip_convert.conversion.pipeline import convert_checkpoint
from chclip_convert.mapping.parts import LAYER, part_of
from chclip_convert.notebook.diff_view import (
    COLUMNS,
    DIFFERS,
    EQUAL,
    NUMERIC,
    ONLY_IN_A,
    ONLY_IN_B,
    SHAPE_DIFFERS,
    DiffUI,
    diff_grid_options,
    number_text,
    suggested_b,
)
from chclip_convert.notebook.plotting.diffs import draw_diff, layer_changes
from chclip_convert.notebook.session import Session


@pytest.fixture
def demo_run(workspace):
    """The demo fine-tuning run: its pretrained reference and its epoch files."""
    return workspace.demo_run()


def moved_targets(reference) -> set[str]:
    """The transformers names of the tensors the demo run moves, from the key report of its reference."""
    report = inspect_checkpoint(reference)
    return {row["key"] for row in report.rows() if row["side"] == "target" and moved_by_demo_run(row["counterpart"])}


def statuses(ui: DiffUI) -> dict[str, str]:
    """Key → status, as the grid shows them."""
    return dict(zip(ui.grid.df["key"], ui.grid.df["status"], strict=True))


def test_the_demo_run_shows_exactly_the_moved_tensors_as_differing(demo_run, workspace):
    reference, epochs = demo_run
    ui = DiffUI(reference, epochs[2], workspace=workspace)
    assert ui.widget is not None and ui.results.layout.display == "none"  # nothing to show before Compare
    ui.compare_button.click()

    moved = moved_targets(reference)
    diff = ui.diff
    assert diff is not None and ui.error is None and moved
    shown = statuses(ui)
    assert {key for key, status in shown.items() if status == DIFFERS} == moved
    assert set(shown.values()) == {DIFFERS, EQUAL} and len(shown) == len(diff.changes)
    compared = len(diff.changes)
    expected = f"{len(moved)} of {compared} tensors differ; only in A 0, only in B 0, shape differs 0."
    assert ui.outcome() == expected and expected in ui.status.value
    assert list(ui.grid.df.columns) == list(COLUMNS)
    assert ui.progress.value == ui.progress.max == compared and ui.progress.bar_style == "success"
    assert ui.results.layout.display != "none" and len(ui.plot.children) == 1
    assert f"<b>{compared}</b> of {compared} tensors" in ui.count.value

    # Every number in the grid is the diff's own, as the grid writes it.
    changes = {change.key: change for change in diff.changes}
    for record in ui.grid.df.to_dict("records"):
        change = changes[record["key"]]
        assert record["relative change"] == number_text(change.relative_change, "relative change")
        assert record["max |B−A|"] == number_text(change.max_abs, "max |B−A|")
        assert record["cosine"] == number_text(change.cosine, "cosine")
        assert (record["relative change"] == "0") == change.equal

    ui.status_filter.value = "not equal"
    assert set(ui.grid.df["key"]) == moved and f"<b>{len(moved)}</b> of {compared}" in ui.count.value
    ui.status_filter.value = "all"
    ui.name_filter.value = "layer.1"  # whole layer numbers: not 10 or 11
    layers = {part_of(key).layer for key in ui.grid.df["key"]}
    assert layers == {1} and len(ui.grid.df) == len(ui.rows()) > 0


def test_the_demo_and_its_own_conversion_are_identical(workspace, tmp_path):
    demo = workspace.demo_checkpoint()
    folder = tmp_path / "demo-hf"
    convert_checkpoint(demo, folder)
    ui = DiffUI(demo, folder)
    diff = ui.compare()

    assert diff is not None and diff.identical and diff.b_kind == "converted folder"
    assert ui.outcome().startswith(f"Identical: all {len(diff.changes)} tensors bit-identical")
    assert set(statuses(ui).values()) == {EQUAL} and len(ui.grid.df) == len(diff.changes)
    ui.status_filter.value = "not equal"
    assert ui.grid.df.empty and "<b>0</b>" in ui.count.value


@pytest.mark.parametrize("bad", ["missing.pt", "junk.pt", "empty-folder"])
def test_a_bad_path_is_said_inline_naming_it(workspace, tmp_path, bad):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "empty-folder").mkdir()
    path = tmp_path / bad
    ui = DiffUI(workspace.demo_checkpoint(), path)
    assert ui.compare() is None

    assert ui.error is not None and str(path) in ui.outcome() and str(path) in ui.status.value
    assert "Traceback" not in ui.status.value and ui.progress.bar_style == "danger"
    assert ui.grid.df.empty and ui.results.layout.display == "none"
    assert not ui.compare_button.disabled and not ui.b_picker.path.disabled

    ui.b_picker.path.value = str(workspace.demo_checkpoint())  # fixing the path clears the error
    assert ui.error is None and ui.outcome() == "" and ui.status.value == ""


def test_an_empty_path_asks_for_it_without_an_error(workspace):
    ui = DiffUI(workspace.demo_checkpoint(), "")
    assert ui.compare() is None and ui.error is None
    assert ui.outcome().startswith("Choose B:")


def test_changing_an_input_clears_the_result(demo_run):
    reference, epochs = demo_run
    ui = DiffUI(reference, epochs[2])
    ui.compare()
    assert ui.diff is not None and not ui.grid.df.empty

    ui.b_picker.path.value = str(epochs[0])
    assert ui.diff is None and ui.outcome() == "" and ui.status.value == ""
    assert ui.grid.df.empty and ui.plot.children == () and ui.results.layout.display == "none"
    assert ui.progress.value == 0 and ui.progress.bar_style == "" and ui.progress_text.value == ""

    ui.compare_button.click()  # the new pair: epoch 1 moved the same tensors
    assert ui.diff is not None and ui.diff.b == epochs[0]
    ui.a_picker.path.value = str(epochs[1])
    assert ui.diff is None and ui.grid.df.empty


def test_names_that_cannot_be_compared_are_listed_with_their_status(workspace):
    demo = workspace.demo_checkpoint()
    damaged = damaged_copy(demo)
    ui = DiffUI(demo, damaged)
    diff = ui.compare()
    shown = statuses(ui)
    assert len(diff.only_in_a) == len(diff.only_in_b) == len(diff.shape_differs) == 1
    assert shown[diff.only_in_a[0]] == ONLY_IN_A and shown[diff.only_in_b[0]] == ONLY_IN_B
    assert diff.only_in_b == [DAMAGE["added"]]  # no rule for it: kept under its own name
    (reshaped,) = diff.shape_differs
    assert shown[reshaped] == SHAPE_DIFFERS
    row = ui.grid.df.set_index("key").loc[reshaped]
    assert row["relative change"] == "" and row["note"].startswith("A ") and ", B " in row["note"]
    assert ui.outcome() == diff.verdict() and "only in A 1, only in B 1, shape differs 1" in ui.outcome()


def test_the_figure_draws_each_towers_layers_and_the_parts_outside_them(demo_run):
    reference, epochs = demo_run
    diff = diff_checkpoints(reference, epochs[2])
    figure = Figure()
    drawn = draw_diff(figure, diff)

    parts = diff.parts()
    towers = {change.part.tower for change in parts if change.part.section == LAYER}
    assert set(drawn.lines) == towers == {"vision", "text"}
    for tower, line in drawn.lines.items():
        expected = [change for change in parts if change.part.tower == tower and change.part.section == LAYER]
        assert list(line.get_xdata()) == [change.part.layer for change in expected]
        assert list(line.get_ydata()) == [change.relative_change for change in expected]
    layers_ax = next(iter(drawn.lines.values())).axes
    data_lines = [line for line in layers_ax.lines if len(line.get_xdata()) > 2]  # not the zero line
    assert sorted(data_lines, key=id) == sorted(drawn.lines.values(), key=id)  # one series a tower, no more
    assert layers_ax.get_yscale() == "symlog" and layers_ax.get_ylim()[0] < 0  # points at 0 drawn whole

    outside = [change for change in parts if change.part.section != LAYER]
    assert drawn.outside_parts == [change.part for change in outside]
    offsets = drawn.outside.get_offsets()
    assert [tuple(point) for point in offsets] == [(change.relative_change, row) for row, change in enumerate(outside)]
    labels = [label.get_text() for label in drawn.outside.axes.get_yticklabels()]
    assert labels == [f"{change.part.tower} {change.part.label}" for change in outside]
    assert "logit scale" in labels[-1] and drawn.problems == []


def test_the_figure_marks_names_that_were_not_compared_at_their_layer_and_row(workspace):
    demo = workspace.demo_checkpoint()
    diff = diff_checkpoints(demo, damaged_copy(demo))
    drawn = draw_diff(Figure(), diff)
    crosses = [tuple(point) for artist in drawn.problems for point in artist.get_offsets()]
    dropped = part_of(diff.only_in_a[0])
    assert dropped.section == LAYER and (dropped.layer, 0.96) in crosses  # along the top, at its layer
    rows = [drawn.outside_parts.index(part_of(name)) for name in [*diff.only_in_b, *diff.shape_differs]]
    assert all((0.96, row) in crosses for row in rows) and len(crosses) == 3
    assert all(math.isfinite(y) for line in drawn.lines.values() for y in line.get_ydata())
    assert set(layer_changes(diff)) == {"vision", "text"}


def test_the_grid_sorts_numbers_as_numbers_and_writes_what_javascript_reads():
    definitions = diff_grid_options()["columnDefs"]
    numeric = next(d for d in definitions if d.get("type") == "num")
    assert numeric["targets"] == [COLUMNS.index(column) for column in NUMERIC]
    assert diff_grid_options()["buttons"][0]["title"] == "chclip-diff"
    assert [number_text(v, "relative change") for v in (None, 0.0, 0.00470, math.inf, math.nan)] == [
        "", "0", "4.70e-03", "Infinity", "NaN"
    ]  # fmt: skip
    assert number_text(0.99998765, "cosine") == "0.999988"


def test_the_notebook_compares_the_demo_with_the_demo_runs_third_epoch(workspace, demo_run):
    session = Session(workspace)
    assert session.is_demo and suggested_b(session) == demo_run[1][2]
    other = workspace.root / "mine" / "mine.pt"  # a checkpoint of the user's, with its vocabulary beside it
    other.parent.mkdir()
    other.write_bytes(session.checkpoint.read_bytes())
    (other.parent / "vocab.txt").write_bytes((session.checkpoint.parent / "vocab.txt").read_bytes())
    session.checkpoint_picker.path.value = str(other)
    assert not session.is_demo and suggested_b(session) == ""
    folder = workspace.ensure_converted(other)
    assert suggested_b(session) == folder

"""Notebook 05's widgets and figures, driven without a browser on the embedded demo run, whose moves are known
(:data:`chclip_convert.conversion.demo.RUN_MOVES`): only text layers 9–11, the text projection and logit_scale move."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from chclip_convert.changes.drift import measure_drift, moved_lines
from chclip_convert.mapping.parts import LAYER, PROJECTION, TEXT, VISION
from chclip_convert.notebook.plotting.runs import draw_curves, draw_heatmaps, heatmap_values, tower_parts
from chclip_convert.notebook.run_view import (
    EpochAverageUI,
    EpochConvertUI,
    RunSession,
    curves_view,
    default_average,
    heatmap_view,
    measure,
)


@pytest.fixture
def demo_drift(workspace):
    reference, _ = workspace.demo_run()
    return measure_drift(reference, [reference.parent])


def test_the_session_opens_on_the_demo_run_and_remembers_a_chosen_run(workspace, tmp_path):
    session = RunSession(workspace)
    assert session.is_demo and session.reference.name == "pretrained.pt"
    assert [info.name for info in session.epochs()] == ["epoch1.pt", "epoch2.pt", "epoch3.pt", "epoch_latest.pt"]
    # A run of the user's (a copy of the demo's files elsewhere) is remembered for the next notebook opened.
    mine = tmp_path / "my-run"
    (mine / "checkpoints").mkdir(parents=True)
    for info in session.epochs():
        (mine / "checkpoints" / info.name).write_bytes(info.path.read_bytes())
    session.run_picker.path.value = str(mine)
    assert "Run the cells below" in session.message.value
    again = RunSession(workspace)
    assert again.run_folder == mine and not again.is_demo
    session.run_picker.path.value = str(tmp_path / "nowhere")
    assert "nowhere" in session.message.value and "is not a folder" in session.message.value


def test_a_choice_that_cannot_be_used_is_said_by_name_and_the_cells_below_run_on(workspace, tmp_path, capsys):
    session = RunSession(workspace)
    reference = session.reference
    session.reference_picker.path.value = str(tmp_path / "nope.pt")
    assert "nope.pt: no such checkpoint or folder" in session.message.value
    assert session.epochs() == [] and "nope.pt: no such checkpoint or folder" in capsys.readouterr().out
    assert measure(session, []) is None and heatmap_view(None).children == () and curves_view(None).children == ()
    assert moved_lines(None) == []
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "pretrained.pt").write_bytes(reference.read_bytes())
    session.reference_picker.path.value = str(alone / "pretrained.pt")
    session.run_picker.path.value = str(alone)
    assert "holds no checkpoint besides the reference" in session.message.value
    assert session.epochs() == [] and "holds no checkpoint besides the reference" in capsys.readouterr().out
    assert EpochConvertUI([], tmp_path / "out").epochs.options == ()


def test_moved_lines_name_exactly_the_demo_runs_moves(demo_drift):
    assert moved_lines(demo_drift) == [
        "vision: unchanged in every epoch (bit-identical to the reference)",
        "text: moved: layers 9–11, projection",
        "      unchanged: embeddings, layers 0–8",
        "shared: moved: logit scale",
    ]


def test_the_heatmaps_draw_the_drift_with_unchanged_cells_masked(demo_drift):
    images = draw_heatmaps(Figure(), demo_drift)
    assert set(images) == {(t, w) for t in (VISION, TEXT) for w in ("vs_reference", "vs_previous")}
    for (tower, which), image in images.items():
        drawn = image.get_array()
        expected = heatmap_values(demo_drift, tower, which)
        assert drawn.shape == (len(tower_parts(demo_drift, tower)), len(demo_drift.epochs))
        np.testing.assert_array_equal(np.ma.getmaskarray(drawn), expected == 0)  # grey exactly where unchanged
        np.testing.assert_array_equal(drawn.compressed(), expected[expected > 0])
    vision = heatmap_values(demo_drift, VISION, "vs_reference")
    assert not vision.any()  # the frozen tower: every cell grey
    text_rows = [part.label for part in tower_parts(demo_drift, TEXT)]
    moved_rows = [row for row, values in zip(text_rows, heatmap_values(demo_drift, TEXT, "vs_reference"), strict=True)
                  if values.all()]  # fmt: skip
    assert moved_rows == ["layer 9", "layer 10", "layer 11", "projection"]


def test_the_curves_follow_embeddings_projections_and_logit_scale(demo_drift):
    lines = draw_curves(Figure(), demo_drift)
    labels = {f"{part.tower} {part.label}" for part in lines}
    assert labels == {"vision embeddings", "vision projection", "text embeddings", "text projection",
                      "shared logit scale"}  # fmt: skip
    for part, (from_reference, from_previous) in lines.items():
        assert list(from_reference.get_ydata()) == demo_drift.vs_reference[part]
        assert list(from_previous.get_ydata()) == demo_drift.vs_previous[part]
    text_projection = next(p for p in lines if p.tower == TEXT and p.section == PROJECTION)
    assert all(value > 0 for value in demo_drift.vs_reference[text_projection])
    assert not any(p.section == LAYER for p in lines)


def test_converting_chosen_epochs_checks_each_then_skips_them_when_still_current(workspace, tmp_path):
    session = RunSession(workspace)
    epochs = session.epochs()
    ui = EpochConvertUI(epochs, tmp_path / "out")
    ui.epochs.value = (epochs[0].path, epochs[2].path)
    ui.convert_button.click()
    first = ui.wait(120)
    assert [(o.checkpoint.name, o.outcome) for o in first] == [("epoch1.pt", "converted"), ("epoch3.pt", "converted")]
    assert all("bit-identical" in o.detail for o in first)
    assert ui.progress.value == 1.0 and ui.progress.bar_style == "success"
    assert "epoch3.pt" in ui.results.value and "converted" in ui.results.value
    written = {o.folder: (o.folder / "model.safetensors").stat().st_mtime_ns for o in first}
    ui.convert_button.click()
    second = ui.wait(120)
    assert [o.outcome for o in second] == ["up to date", "up to date"]
    assert {o.folder: (o.folder / "model.safetensors").stat().st_mtime_ns for o in second} == written
    ui.epochs.value = ()  # changing the choice clears the result shown
    assert ui.results.value == "" and ui.outcomes == []
    ui.convert_button.click()
    assert "Choose one or more epochs" in ui.results.value


@pytest.mark.parametrize("phase", ["converting", "verifying"])
def test_cancel_stops_the_batch_and_leaves_no_folder_unchecked(workspace, tmp_path, phase):
    """Cancel while the second epoch is written, or checked: the first stays (listed), the second leaves nothing."""
    session = RunSession(workspace)
    epochs = session.epochs()
    ui = EpochConvertUI(epochs, tmp_path / "out")
    ui.epochs.value = (epochs[0].path, epochs[1].path)

    def click_cancel(change) -> None:  # from inside the batch, once the second epoch reaches the stage
        if change["new"].startswith("2 / 2 · ") and f": {phase} · " in change["new"]:
            ui.cancel_button.click()

    ui.progress_text.observe(click_cancel, names="value")
    ui.convert_button.click()
    done = ui.wait(120)
    assert "Cancelled after 1 of 2" in ui.progress_text.value
    assert [(o.checkpoint.name, o.outcome) for o in done] == [("epoch1.pt", "converted")]
    assert "epoch1.pt" in ui.results.value
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [done[0].folder.name]  # nothing else, partial or not
    assert torch.load(epochs[1].path, weights_only=True)["epoch"] == 2  # the checkpoint is as it was


def test_cancel_while_an_up_to_date_epoch_is_checked_leaves_the_widget_ready(workspace, tmp_path):
    """Cancel while the second epoch's folder is checked (up to date: nothing more is reported until the check
    ends, so it ends and is listed): the batch stops there, and the widget is idle again, Convert usable."""
    session = RunSession(workspace)
    epochs = session.epochs()
    ui = EpochConvertUI(epochs, tmp_path / "out")
    ui.epochs.value = (epochs[0].path, epochs[1].path)
    ui.convert_button.click()
    ui.wait(120)

    def click_cancel(change) -> None:
        if change["new"].startswith("2 / 2 · ") and ": checking · " in change["new"]:
            ui.cancel_button.click()

    ui.progress_text.observe(click_cancel, names="value")
    ui.convert_button.click()
    done = ui.wait(120)
    assert ui.progress_text.value.startswith("Cancelled after 2 of 2")
    assert [o.outcome for o in done] == ["up to date", "up to date"]
    assert not ui.task.busy and not ui.convert_button.disabled


def test_averaging_chosen_epochs_writes_one_checkpoint_that_drift_shows_as_its_own_column(workspace, tmp_path):
    session = RunSession(workspace)
    epochs = session.epochs()
    ui = EpochAverageUI(epochs, default_average(workspace, epochs))
    assert [label for label, _ in ui.epochs.options] == [
        "epoch1.pt — epoch 1 · step 125",
        "epoch2.pt — epoch 2 · step 250",
        "epoch3.pt — epoch 3 · step 375",
    ]  # epoch_latest.pt repeats epoch3.pt: not offered
    ui.epochs.value = tuple(path for _, path in ui.epochs.options)
    ui.weights.value = "1 2"
    ui.average_button.click()
    assert "2 weight(s) for 3 epoch(s)" in ui.results.value and ui.written is None
    ui.weights.value = "1 1 2"
    ui.average_button.click()
    written = ui.wait(120)
    assert written == workspace.root / "averaged" / "demo-run-avg.pt" and ui.progress.bar_style == "success"
    assert "0.5000 ×" in ui.results.value
    drift = measure(session, epochs, also=written)
    assert [info.label for info in drift.epochs] == ["e1", "e2", "e3", "avg"]
    assert all(len(values) == 4 for values in drift.vs_reference.values())
    ui.average_button.click()  # the file exists now: refused, said, and the file kept
    ui.wait(120)
    assert "exists" in ui.results.value and ui.written is None and written.exists()


def test_cancel_while_averaging_leaves_nothing(workspace, tmp_path):
    epochs = RunSession(workspace).epochs()
    ui = EpochAverageUI(epochs, tmp_path / "out" / "avg.pt")
    ui.epochs.value = tuple(path for _, path in ui.epochs.options)

    def click_cancel(change) -> None:
        if "averaging" in change["new"]:
            ui.cancel_button.click()

    ui.progress_text.observe(click_cancel, names="value")
    ui.average_button.click()
    assert ui.wait(120) is None and ui.progress_text.value == "Cancelled: nothing was written."
    assert not (tmp_path / "out").exists()  # no file, no partial, no lock, not even the folder made for them

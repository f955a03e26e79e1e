"""A training run: its epochs read from metadata alone, how far each layer moved (against the demo run's known
moves and an independent computation), and converting chosen epochs in one go — checked, skipped when up to
date, converted again when stale, never over a folder of someone else's files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from chclip_convert import convert_checkpoint
from chclip_convert.checkpoint import SourceCheckpoint
from chclip_convert.cli import main
from chclip_convert.demo import RUN_EPOCH_SCALE, RUN_LOGIT_SCALE_STEP, RUN_MOVES, damaged_copy, write_demo_run
from chclip_convert.diff import LAYER, LOGIT_SCALE, PROJECTION, SHARED, TEXT, VISION, Part
from chclip_convert.errors import CheckpointReadError
from chclip_convert.tensor_sources import FOLDER, MappedCheckpoint
from chclip_convert.training_run import describe, find_checkpoints, measure_drift, read_run

# The parts the demo run moves (chclip_convert.demo.RUN_MOVES and its logit_scale step), written out here.
MOVED = {Part(TEXT, LAYER, 9), Part(TEXT, LAYER, 10), Part(TEXT, LAYER, 11), Part(TEXT, PROJECTION),
         Part(SHARED, LOGIT_SCALE)}  # fmt: skip
EPOCH_FILES = ["epoch1.pt", "epoch2.pt", "epoch3.pt"]

# Sums in float64 over the same float32 values, in another order: they differ by float64 rounding only
# (see RELATIVE in test_diff.py).
RELATIVE = 1e-9


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, list[Path]]:
    """The demo run (read only): ``pretrained.pt`` and ``checkpoints/epoch1..3.pt``, ``epoch_latest.pt``."""
    return write_demo_run(tmp_path_factory.mktemp("run") / "run-a")


@pytest.fixture(scope="module")
def drift(demo_run):
    reference, files = demo_run
    return measure_drift(reference, files)


def originals(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model tensors by their original names, loaded whole with torch."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {key.removeprefix("module."): value for key, value in state.items()}


def test_the_epoch_table_comes_from_metadata_alone(demo_run, monkeypatch):
    reference, files = demo_run

    def refuse(self, key):
        raise AssertionError(f"read {key}")

    monkeypatch.setattr(SourceCheckpoint, "read", refuse)  # every tensor read goes through one of these two
    monkeypatch.setattr(MappedCheckpoint, "read", refuse)
    infos = read_run(list(reversed(files)))  # given in any order, listed in training order
    assert [info.name for info in infos] == [*EPOCH_FILES, "epoch_latest.pt"]
    assert [(info.epoch, info.step) for info in infos] == [(1, 125), (2, 250), (3, 375), (3, 375)]
    assert [info.same_as for info in infos] == [None, None, None, "epoch3.pt"]
    weights = sum(t.numel() * t.element_size() for t in originals(files[0]).values())
    for info in infos:
        assert info.run_name == "demo-finetune" and info.dtype == "float32"
        assert info.weight_bytes == weights  # the optimizer's moments are not weights
        assert info.file_bytes == info.path.stat().st_size > weights
    pretrained = describe(reference)
    assert (pretrained.epoch, pretrained.step, pretrained.run_name) == (0, 0, "demo-pretrained")


def test_only_the_parts_the_run_trains_move(drift):
    assert {p for p in drift.parts if drift.moved(p)} == MOVED
    for part in drift.parts:
        if part not in MOVED:
            assert drift.vs_reference[part] == drift.vs_previous[part] == [0.0] * 3, part
    vision = [p for p in drift.parts if p.tower == VISION]
    assert {p.layer for p in vision if p.section == LAYER} == set(range(12))  # all twelve there, all still
    assert set(RUN_MOVES) == {f"bert.encoder.layer.{n}." for n in (9, 10, 11)} | {"text_projection"}  # as MOVED


def test_the_latest_copy_is_left_out_and_each_epoch_shown(drift):
    assert [info.name for info in drift.epochs] == EPOCH_FILES
    assert [(info.name, info.same_as) for info in drift.left_out] == [("epoch_latest.pt", "epoch3.pt")]
    text = drift.to_text()
    assert "epoch_latest.pt  3      375" in text and "same epoch and step as epoch3.pt: left out" in text
    assert "text    layer 10" in text and "vision  layer 10     0         0         0" in text


def test_the_first_epochs_change_from_the_one_before_is_its_change_from_the_reference(drift):
    for part in drift.parts:
        assert drift.vs_previous[part][0] == drift.vs_reference[part][0], part


def test_one_layer_matches_an_independent_computation(demo_run, drift):
    """Text layer 10: √(Σ‖W − W_ref‖²) / √(Σ‖W_ref‖²) over its tensors, from torch.load, in float64."""
    reference, files = demo_run
    prefix = "bert.encoder.layer.10."
    layers = [{k: v.to(torch.float64) for k, v in originals(p).items() if k.startswith(prefix)} for p in
              [reference, *files[:3]]]  # fmt: skip
    assert len(layers[0]) == 16  # 8 modules, each a weight and a bias

    def ratio(new, old):
        return math.sqrt(sum((new[k] - old[k]).square().sum().item() for k in old) / sum(
            old[k].square().sum().item() for k in old))  # fmt: skip

    part = Part(TEXT, LAYER, 10)
    for epoch in range(3):
        assert drift.vs_reference[part][epoch] == pytest.approx(ratio(layers[epoch + 1], layers[0]), rel=RELATIVE)
        assert drift.vs_previous[part][epoch] == pytest.approx(ratio(layers[epoch + 1], layers[epoch]), rel=RELATIVE)
        # The demo moves each of the layer's tensors by RUN_MOVES × the epoch's scale of its norm, so the layer
        # moves by that too. The stored values are float32, rounded by up to 2⁻²⁴ of each value: at most 1.2e-7
        # of the layer's norm on each side, under 1e-4 of the smallest move here (0.008 × 0.3); hence 1e-3.
        expected = RUN_MOVES["bert.encoder.layer.10."] * RUN_EPOCH_SCALE[epoch]
        assert drift.vs_previous[part][epoch] == pytest.approx(expected, rel=1e-3)
    scale = [originals(path)["logit_scale"].item() for path in [reference, *files[:3]]]
    logit = Part(SHARED, LOGIT_SCALE)
    for epoch in range(3):
        assert drift.vs_reference[logit][epoch] == pytest.approx(abs(scale[epoch + 1] - scale[0]) / scale[0], rel=1e-12)
        # logit_scale = log(1/0.07) ≈ 2.66 grows 0.05 an epoch in float32 (rounding 2.4e-7 per step)
        expected = RUN_LOGIT_SCALE_STEP * (epoch + 1) / math.log(1 / 0.07)
        assert drift.vs_reference[logit][epoch] == pytest.approx(expected, rel=1e-4)


def test_a_run_folder_gives_what_its_files_give(demo_run, drift):
    reference, files = demo_run
    run = reference.parent  # holds pretrained.pt beside checkpoints/, as the demo writes it
    assert find_checkpoints(run) == find_checkpoints(run / "checkpoints") == sorted(files)
    for given in (run, run / "checkpoints"):
        assert measure_drift(reference, [given]).to_dict() == drift.to_dict(), given


def test_a_folder_without_checkpoints_is_refused_by_name(tmp_path):
    (tmp_path / "notes.txt").write_text("no checkpoints here")
    with pytest.raises(CheckpointReadError, match="holds no checkpoint files") as raised:
        find_checkpoints(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_a_converted_folder_serves_as_the_reference(demo_run, drift, tmp_path):
    reference, files = demo_run
    folder = convert_checkpoint(reference, tmp_path / "pretrained-hf").output_dir
    from_folder = measure_drift(folder, files)
    assert from_folder.reference.kind == FOLDER and from_folder.reference.epoch is None
    assert from_folder.parts == drift.parts
    for part in drift.parts:  # the same tensors, summed in the folder's order: float64 rounding apart
        for mine, theirs in ((from_folder.vs_reference, drift.vs_reference), (from_folder.vs_previous,
                                                                              drift.vs_previous)):  # fmt: skip
            assert mine[part] == pytest.approx(theirs[part], rel=RELATIVE, abs=0.0), part
    assert not from_folder.problems


def test_an_epoch_that_lacks_or_reshapes_tensors_is_reported(demo_run, tmp_path):
    reference, files = demo_run
    damaged = damaged_copy(shutil.copy(files[0], tmp_path / "epoch1.pt"))
    result = measure_drift(reference, [damaged])
    problems = "\n".join(result.problems)
    assert "lacks 1 tensor(s) of the reference: vision_model.encoder.layers.1.mlp.fc2.bias" in problems
    assert "holds with another shape 1 tensor(s) of the reference: vision_model.post_layernorm.weight" in problems
    assert "adds 1 tensor(s) of the reference: visual.adapter.weight" in problems
    assert result.moved(Part(TEXT, LAYER, 0))  # the altered query weight; the rest is measured still


def test_drift_json(demo_run, drift, capsys):
    reference, _ = demo_run
    assert main(["drift", "--reference", str(reference), str(reference.parent / "checkpoints"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(drift.to_dict()))
    assert [e["name"] for e in printed["epochs"]] == EPOCH_FILES
    assert [(e["name"], e["same_as"]) for e in printed["left_out"]] == [("epoch_latest.pt", "epoch3.pt")]
    rows = {(row["tower"], row["part"]): row for row in printed["parts"]}
    assert rows[("vision", "layer 0")]["vs_reference"] == [0.0, 0.0, 0.0]
    assert rows[("text", "layer 11")]["vs_previous"][0] == pytest.approx(0.016, rel=1e-3)  # as in the test above

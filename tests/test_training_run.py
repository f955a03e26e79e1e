"""A training run: its epochs read from metadata alone, how far each layer moved (against the demo run's known
moves and an independent computation), and converting chosen epochs in one go — checked, skipped when up to
date, converted again when stale, never over a folder of someone else's files."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from support.files import tree_sha256

from chclip_convert import convert_checkpoint, convert_state_dict
from chclip_convert.changes.diff import CheckpointDiff, diff_checkpoints, measure_change
from chclip_convert.changes.drift import describe, find_checkpoints, measure_drift, read_run
from chclip_convert.changes.epochs import CONVERTED, FAILED, UP_TO_DATE, check_problem, convert_epochs, folder_for
from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import (
    RUN_EPOCH_SCALE,
    RUN_LOGIT_SCALE_STEP,
    RUN_MOVES,
    damaged_copy,
    write_demo_run,
)
from chclip_convert.conversion.views import CHECKPOINT, FOLDER, MappedCheckpoint
from chclip_convert.errors import CheckpointReadError
from chclip_convert.files.checkpoint import SourceCheckpoint, load_checkpoint
from chclip_convert.files.folder import load_folder_state
from chclip_convert.mapping.parts import LAYER, LOGIT_SCALE, PROJECTION, SHARED, TEXT, VISION, Part

# The parts the demo run moves (chclip_convert.conversion.demo.RUN_MOVES and its logit_scale step), written out here.
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
    assert "text    layer 10" in text and "vision  all 15 parts  0         0         0" in text  # folded


def test_the_first_epochs_change_from_the_one_before_is_its_change_from_the_reference(drift):
    for part in drift.parts:
        assert drift.vs_previous[part][0] == drift.vs_reference[part][0], part


def test_one_layer_matches_an_independent_computation(demo_run, drift):
    """Text layer 10: √(Σ‖W − W_ref‖²) / √(Σ‖W_ref‖²) over its tensors, from torch.load, in float64."""
    reference, files = demo_run
    prefix = "bert.encoder.layer.10."
    checkpoints = [reference, *files[:3]]
    layers = [{k: v.double() for k, v in originals(path).items() if k.startswith(prefix)} for path in checkpoints]
    assert len(layers[0]) == 16  # 8 modules, each a weight and a bias

    def ratio(new, old):
        moved = sum((new[k] - old[k]).square().sum().item() for k in old)
        return math.sqrt(moved / sum(old[k].square().sum().item() for k in old))

    part = Part(TEXT, LAYER, 10)
    for epoch in range(3):
        assert drift.vs_reference[part][epoch] == pytest.approx(ratio(layers[epoch + 1], layers[0]), rel=RELATIVE)
        assert drift.vs_previous[part][epoch] == pytest.approx(ratio(layers[epoch + 1], layers[epoch]), rel=RELATIVE)
        # The demo moves each of the layer's tensors by RUN_MOVES × the epoch's scale of its norm, so the layer
        # moves by that too, up to float32: each stored value is rounded by at most 2⁻²⁴ of itself, 1.2e-7 of the
        # layer's norm over both epochs, 5e-5 of the smallest move here (0.008 × 0.3); the move's size is itself
        # computed in float32 (two norms, ~1e-6). 1e-3 leaves room and still tells 0.008 from its neighbours.
        expected = RUN_MOVES["bert.encoder.layer.10."] * RUN_EPOCH_SCALE[epoch]
        assert drift.vs_previous[part][epoch] == pytest.approx(expected, rel=1e-3)
    scale = [originals(path)["logit_scale"].item() for path in checkpoints]
    logit = Part(SHARED, LOGIT_SCALE)
    for epoch in range(3):
        # one value and two float64 operations on the same float32 numbers: equal to float64 rounding
        assert drift.vs_reference[logit][epoch] == pytest.approx(abs(scale[epoch + 1] - scale[0]) / scale[0], rel=1e-12)
        # logit_scale = log(1/0.07) ≈ 2.66 grows 0.05 an epoch, each sum rounded to float32 (half a unit in the
        # last place there is 1.2e-7): after three epochs the change is off by < 5e-7, 1e-5 of 0.05; hence 1e-4.
        expected = RUN_LOGIT_SCALE_STEP * (epoch + 1) / math.log(1 / 0.07)
        assert drift.vs_reference[logit][epoch] == pytest.approx(expected, rel=1e-4)


def test_a_run_folder_gives_what_its_files_give(demo_run, drift):
    reference, files = demo_run
    run = reference.parent  # holds pretrained.pt beside checkpoints/, as the demo writes it
    assert find_checkpoints(run) == find_checkpoints(run / "checkpoints") == sorted(files)
    assert measure_drift(reference, [run]).to_dict() == drift.to_dict()  # checkpoints/ given: see test_drift_json


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
    assert "holds 1 tensor(s) with another shape than the reference's: vision_model.post_layernorm.weight" in problems
    assert "holds 1 tensor(s) the reference lacks (not compared): visual.adapter.weight" in problems
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


def test_drift_of_a_missing_file_is_an_error_naming_it(demo_run, tmp_path, capsys):
    reference, files = demo_run
    missing = tmp_path / "epoch7.pt"
    assert main(["drift", "--reference", str(reference), str(files[0]), str(missing)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"error: {missing}: no such file.\n"


# Converting epochs in one go.


@pytest.fixture
def run(demo_run, tmp_path) -> list[Path]:
    """A copy of the demo run this test may rewrite: its epoch files, epoch_latest.pt last."""
    copy = shutil.copytree(demo_run[0].parent, tmp_path / "run-a")
    return [copy / "checkpoints" / name for name in [*EPOCH_FILES, "epoch_latest.pt"]]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Each file and folder below ``folder`` (itself too): inode, modification time, content digest. ``folder``'s
    own modification time is left out: the writer's lock file beside each output is made and removed in it."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_ino, None if p == folder else p.stat().st_mtime_ns, tree_sha256(p) if p.is_file() else None
        )
        for p in [folder, *sorted(folder.rglob("*"))]
    }  # fmt: skip


def assert_holds(folder: Path, checkpoint: Path) -> None:
    """``folder`` holds exactly the tensors the mapping table makes from ``checkpoint``, dtype and all."""
    expected = convert_state_dict(load_checkpoint(checkpoint).state_dict).state_dict
    written = load_folder_state(folder)
    assert set(written) == set(expected)
    different = [
        k for k in expected if written[k].dtype != expected[k].dtype or not torch.equal(written[k], expected[k])
    ]
    assert not different, different


def test_the_chosen_epochs_are_converted_and_each_checked(run, tmp_path):
    into = tmp_path / "converted"
    results = convert_epochs([run[0], run[2]], into)
    assert [r.outcome for r in results] == [CONVERTED, CONVERTED]
    assert [r.folder for r in results] == [into / "run-a-epoch1-hf", into / "run-a-epoch3-hf"]
    assert sorted(into.iterdir()) == [into / "run-a-epoch1-hf", into / "run-a-epoch3-hf"]  # epoch 2 not chosen
    for result, checkpoint in zip(results, [run[0], run[2]], strict=True):
        assert result.checkpoint == checkpoint
        assert result.detail == f"checked: all {len(load_folder_state(result.folder))} tensors bit-identical"
        assert_holds(result.folder, checkpoint)


def test_a_second_call_leaves_up_to_date_folders_as_they_are(run, tmp_path):
    into = tmp_path / "converted"
    convert_epochs(run[:2], into)
    before = snapshot(into)
    results = convert_epochs(run[:2], into)
    assert [r.outcome for r in results] == [UP_TO_DATE, UP_TO_DATE]
    assert all(r.detail == "still matches its checkpoint; left as it is" for r in results)
    assert snapshot(into) == before  # not one file rewritten


def test_relative_paths_are_up_to_date_on_the_second_call_too(run, tmp_path, monkeypatch):
    """As typed on the command line: ``convert-epochs --into converted run-a/checkpoints/epoch1.pt``."""
    monkeypatch.chdir(tmp_path)
    given = [Path("run-a/checkpoints/epoch1.pt")]
    assert [r.outcome for r in convert_epochs(given, "converted")] == [CONVERTED]
    before = snapshot(tmp_path / "converted")
    assert [r.outcome for r in convert_epochs(given, "converted")] == [UP_TO_DATE]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the same file and folder, reached from another folder
    again = convert_epochs([Path("../run-a/checkpoints/epoch1.pt")], "../converted")
    assert [(r.outcome, r.folder.name) for r in again] == [(UP_TO_DATE, "run-a-epoch1-hf")]
    assert snapshot(tmp_path / "converted") == before


def test_folders_are_named_after_the_run_from_wherever_the_path_is_given(tmp_path, monkeypatch):
    run = tmp_path / "run-a" / "checkpoints"
    run.mkdir(parents=True)
    into = tmp_path / "converted"
    assert folder_for(run / "epoch3.pt", into) == into / "run-a-epoch3-hf"
    assert folder_for(tmp_path / "loose" / "epoch3.pt", into) == into / "loose-epoch3-hf"  # a run's file name
    assert folder_for(tmp_path / "b" / "step_500.pt", into) == into / "b-step_500-hf"
    assert folder_for(tmp_path / "models" / "clip_cn_vit-b-16.pt", into) == into / "clip_cn_vit-b-16-hf"  # named
    monkeypatch.chdir(run)
    assert folder_for("epoch3.pt", into) == folder_for(Path("../checkpoints/epoch3.pt"), into)
    assert folder_for("epoch3.pt", into) == into / "run-a-epoch3-hf"
    monkeypatch.chdir(run.parent)
    assert folder_for("checkpoints/epoch3.pt", "converted") == Path("converted") / "run-a-epoch3-hf"


def test_two_checkpoints_bound_for_one_folder_never_replace_each_other(run, tmp_path):
    """Two runs' folders of one name give one folder name: the second is refused, even with overwrite."""
    first, second = tmp_path / "a" / "same" / "epoch1.pt", tmp_path / "b" / "same" / "epoch1.pt"
    for source, target in ((run[0], first), (run[1], second)):
        target.parent.mkdir(parents=True)
        shutil.copyfile(source, target)
        shutil.copyfile(source.with_name("vocab.txt"), target.with_name("vocab.txt"))
    results = convert_epochs([first, second], tmp_path / "converted", overwrite=True)
    assert [r.outcome for r in results] == [CONVERTED, FAILED]
    assert results[0].folder == results[1].folder and "is also where epoch1.pt goes" in results[1].detail
    assert diff_checkpoints(first, results[0].folder).identical  # the first conversion is still there


def test_a_rewritten_checkpoint_is_converted_again(run, tmp_path):
    """epoch_latest.pt is rewritten every epoch: its folder follows the weights it holds now."""
    latest, into = run[3], tmp_path / "converted"
    (first,) = convert_epochs([latest], into)
    assert first.outcome == CONVERTED and diff_checkpoints(run[2], first.folder).identical
    shutil.copyfile(run[1], latest)  # now epoch 2's weights
    (again,) = convert_epochs([latest], into)
    assert again.outcome == CONVERTED and again.detail.endswith("bit-identical")
    assert diff_checkpoints(run[1], again.folder).identical and not diff_checkpoints(run[2], again.folder).identical

    resaved = torch.load(latest, weights_only=True)
    del resaved["optimizer"]  # other optimizer state, the same weights: still up to date
    torch.save(resaved, latest)
    assert [r.outcome for r in convert_epochs([latest], into)] == [UP_TO_DATE]


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_other_files_is_refused_and_left_untouched(run, tmp_path, overwrite):
    into = tmp_path / "converted"
    mine = into / "run-a-epoch1-hf"
    (mine / "data").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes", encoding="utf-8")
    (mine / "data" / "table.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    before = snapshot(mine)
    refused, converted = convert_epochs(run[:2], into, overwrite=overwrite)
    assert refused.outcome == FAILED and refused.folder == mine
    assert str(mine) in refused.detail and "left as it is" in refused.detail
    assert snapshot(mine) == before  # nothing the user had is lost, not even with overwrite
    assert converted.outcome == CONVERTED  # the batch went on


def test_a_conversion_of_another_checkpoint_is_replaced_only_with_overwrite(run, tmp_path):
    into = tmp_path / "converted"
    folder = convert_checkpoint(run[1], into / "run-a-epoch1-hf").output_dir  # epoch 2 in epoch 1's place
    before = snapshot(folder)
    (refused,) = convert_epochs([run[0]], into)
    assert refused.outcome == FAILED and "holds a conversion of another checkpoint" in refused.detail
    assert "--overwrite" in refused.detail and snapshot(folder) == before
    (replaced,) = convert_epochs([run[0]], into, overwrite=True)
    assert replaced.outcome == CONVERTED
    assert_holds(folder, run[0])


def test_bfloat16_is_checked_within_its_rounding(run, tmp_path):
    into = tmp_path / "converted"
    (result,) = convert_epochs([run[0]], into, dtype="bfloat16")
    written = load_folder_state(result.folder)
    assert result.outcome == CONVERTED
    assert result.detail == f"checked: all {len(written)} tensors within bfloat16 rounding"
    assert {t.dtype for t in written.values()} == {torch.bfloat16}
    # Independently: bfloat16 keeps 8 significant bits (7 stored), so rounding to nearest moves each value by at
    # most 2⁻⁸ of itself, and a tensor by at most 2⁻⁸ of its norm; that some tensor moved shows the cast happened.
    expected = convert_state_dict(load_checkpoint(run[0]).state_dict).state_dict
    changes = [((written[k].double() - v.double()).norm() / v.double().norm()).item() for k, v in expected.items()]
    assert 0 < max(changes) <= 2**-8
    (refused,) = convert_epochs([run[0]], into)  # another dtype option: replaced only when asked
    assert refused.outcome == FAILED and "or with another dtype" in refused.detail
    (again,) = convert_epochs([run[0]], into, overwrite=True)
    assert again.outcome == CONVERTED and again.detail.endswith("bit-identical")
    assert_holds(again.folder, run[0])


def test_check_problem_allows_rounding_and_refuses_an_overflow(demo_run):
    values = torch.tensor([1.0, 3.14159, -70000.0])
    half = values.to(torch.float16)  # -70000 is beyond float16's largest, 65504: -inf
    rounded = measure_change("rounded", values[:2], half[:2])
    overflowed = measure_change("overflowed", values, half)
    diff = CheckpointDiff(Path("a"), Path("b"), CHECKPOINT, FOLDER, [], [], {}, [rounded])
    assert not rounded.equal and check_problem(diff, "float16") == ""
    assert check_problem(diff, "auto") == "1 tensor(s) differ (none may differ, the dtypes kept): rounded"
    diff.changes.append(overflowed)
    assert "overflowed" in check_problem(diff, "float16") and "rounded" not in check_problem(diff, "float16")
    diff.only_in_a.append("logit_scale")
    assert check_problem(diff, "float16") == "missing: logit_scale"


def test_a_broken_checkpoint_fails_alone(run, tmp_path):
    broken = run[0].parent / "epoch9.pt"
    broken.write_bytes(b"not a checkpoint, just some bytes")
    into, events = tmp_path / "converted", []
    results = convert_epochs([run[0], broken, run[1]], into, progress=events.append)
    assert [r.outcome for r in results] == [CONVERTED, FAILED, CONVERTED]
    assert str(broken) in results[1].detail and "is not a PyTorch checkpoint" in results[1].detail
    assert not results[1].folder.exists()
    assert_progress(events, [run[0], broken, run[1]])


def assert_progress(events, checkpoints: list[Path]) -> None:
    """Bytes over the whole batch, from zero to the total, never back; one checkpoint after another."""
    total = sum(_weights(path) for path in checkpoints)
    assert events and all(e.total == total and e.unit == "B" and e.count == len(checkpoints) for e in events)
    done = [e.done for e in events]
    assert done == sorted(done) and done[0] == 0 and done[-1] == total
    assert [e.index for e in events] == sorted(e.index for e in events)
    assert {Path(e.item) for e in events} == set(checkpoints)


def _weights(path: Path) -> int:
    try:
        return describe(path).weight_bytes
    except CheckpointReadError:
        return 0


def test_progress_reaches_the_total_and_never_goes_back(run, tmp_path):
    into = tmp_path / "converted"
    events = []
    convert_epochs(run[:2], into, progress=events.append)
    assert_progress(events, run[:2])
    first = [e.stage for e in events if e.index == 1]
    assert first[0] == "checking" and "converting" in first and first[-2:] == ["verifying", "done"]
    events.clear()
    assert [r.outcome for r in convert_epochs(run[:2], into, progress=events.append)] == [UP_TO_DATE] * 2
    assert_progress(events, run[:2])  # nothing to write, and still the whole way


def test_convert_epochs_command(run, tmp_path, capsys):
    into, folder = tmp_path / "converted", run[0].parent.parent  # the run folder, pretrained.pt and all
    assert main(["convert-epochs", "--into", str(into), str(folder), "--no-progress", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    names = list(EPOCH_FILES)  # epoch_latest.pt repeats epoch3.pt: not converted again
    assert [Path(r["checkpoint"]).name for r in printed] == names
    assert [r["outcome"] for r in printed] == [CONVERTED] * 3
    assert [Path(r["folder"]).name for r in printed] == [f"run-a-{Path(name).stem}-hf" for name in names]
    assert main(["convert-epochs", "--into", str(into), str(folder)]) == 0  # with the progress bar
    captured = capsys.readouterr()
    assert captured.out.count(f"{UP_TO_DATE} →") == 3 and "3/3 epoch3.pt" in captured.err
    assert "epoch_latest.pt: the same epoch and step as epoch3.pt; not converted again" in captured.err
    broken = run[0].parent / "epoch9.pt"
    broken.write_bytes(b"")
    assert main(["convert-epochs", "--into", str(into), str(broken), str(run[0]), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"epoch9.pt: {FAILED}" in out and "the file is empty" in out and f"epoch1.pt: {UP_TO_DATE}" in out


def test_a_run_with_nothing_but_the_reference_is_refused_by_name(run):
    """The reference given by another spelling of its path is still the reference, not an epoch of the run."""
    alone = run[0].parent.parent / "alone"
    alone.mkdir()
    shutil.copyfile(run[2], alone / "epoch3.pt")
    spelled = alone / ".." / "alone" / "epoch3.pt"
    with pytest.raises(CheckpointReadError, match="holds no checkpoint to compare besides the reference") as error:
        measure_drift(spelled, [alone])
    assert str(alone) in str(error.value)


def test_files_without_metadata_follow_their_numbers(run, tmp_path):
    """Bare state dicts carry no epoch: epoch2 comes before epoch10, as a person counts."""
    bare = tmp_path / "bare"
    bare.mkdir()
    for number, source in ((10, run[1]), (2, run[0])):
        torch.save(torch.load(source, weights_only=True)["state_dict"], bare / f"epoch{number}.pt")
    assert [info.name for info in read_run([bare])] == ["epoch2.pt", "epoch10.pt"]


def test_a_conversion_without_a_tokenizer_says_so_in_its_outcome(run, tmp_path):
    """No vocab.txt beside the checkpoint (and cn_clip's is of another size): converted and checked, and the
    outcome names what is missing instead of a stray warning without the file's name."""
    lone = tmp_path / "lone" / "epoch1.pt"
    lone.parent.mkdir()
    shutil.copyfile(run[0], lone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes as a warning
        (result,) = convert_epochs([lone], tmp_path / "converted")
    assert result.outcome == CONVERTED and "bit-identical" in result.detail
    assert "\nwarning: " in result.detail and "No tokenizer was written" in result.detail
    assert not (result.folder / "vocab.txt").exists()


def test_a_folder_without_the_training_record_is_converted_again(run, tmp_path):
    """A folder written before conversions recorded epoch, step and name would reverse to epoch 0: not up to date."""
    into = tmp_path / "converted"
    [first] = convert_epochs(run[:1], into)
    report = first.folder / "conversion_report.json"
    record = json.loads(report.read_text(encoding="utf-8"))
    assert record["training"]["epoch"] is not None
    del record["training"]
    report.write_text(json.dumps(record), encoding="utf-8")
    [again] = convert_epochs(run[:1], into)
    assert again.outcome == CONVERTED
    assert json.loads(report.read_text(encoding="utf-8"))["training"] == first_training(run[0])


def first_training(checkpoint: Path) -> dict:
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    return {key: loaded[key] for key in ("epoch", "step", "name")}

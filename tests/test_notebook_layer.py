"""The work folder and its settings, the path picker, and the converter widget's background run, Cancel and
state — driven as a person would (set values, click), without a browser."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from support import ROOT
from support.files import locked_folder, tree_sha256

from chclip_convert.conversion.demo import DEMO_FILE, write_demo_checkpoint
from chclip_convert.conversion.pipeline import FINISHING, READING
from chclip_convert.notebook.converter import LOADING, ConvertUI
from chclip_convert.notebook.picker import PathPicker, folder_entries
from chclip_convert.notebook.workspace import Workspace
from chclip_convert.progress import WRITING


def test_without_a_choice_the_workspace_offers_the_demo_written_into_it(workspace):
    checkpoint, is_demo = workspace.checkpoint()
    assert is_demo and checkpoint == workspace.root / "demo" / DEMO_FILE and checkpoint.is_file()
    assert workspace.converted_folder(checkpoint) is None


def test_a_choice_made_once_is_offered_again_and_the_environment_wins(workspace, demo_checkpoint, monkeypatch):
    workspace.remember(demo_checkpoint, demo_checkpoint.parent / "nowhere")
    assert Workspace(workspace.root).checkpoint() == (demo_checkpoint, False)
    # A remembered folder that holds no converted model is not offered.
    assert workspace.converted_folder(demo_checkpoint) is None
    monkeypatch.setenv("CHCLIP_CHECKPOINT", str(workspace.root / "given.pt"))
    assert workspace.checkpoint() == (workspace.root / "given.pt", False)


def test_new_outputs_never_reuse_a_folder_that_holds_something(workspace, tmp_path):
    run = tmp_path / "run-a" / "checkpoints" / "epoch_latest.pt"
    first = workspace.new_output(run)
    assert first == workspace.root / "converted" / "run-a-epoch_latest-hf"
    first.mkdir(parents=True)
    assert workspace.new_output(run) == first  # empty: still usable
    (first / "config.json").write_text("{}")
    assert workspace.new_output(run) == first.with_name("run-a-epoch_latest-hf-2")


def test_unreadable_settings_are_reported_and_kept_aside_not_lost(workspace, demo_checkpoint):
    workspace.root.mkdir(parents=True)
    workspace.settings_path.write_text("{not json")
    with pytest.warns(UserWarning, match="settings.json: unreadable settings"):
        assert workspace.settings() == {}
    with pytest.warns(UserWarning, match="kept as settings.json.unreadable"):
        workspace.remember(demo_checkpoint)
    assert (workspace.root / "settings.json.unreadable").read_text() == "{not json"
    assert json.loads(workspace.settings_path.read_text())["checkpoint"] == str(demo_checkpoint)
    # Valid JSON of another shape is as unreadable, and an earlier set-aside file is kept too.
    workspace.settings_path.write_text('{"converted": []}')
    with pytest.warns(UserWarning, match="not the settings this tool writes"):
        assert workspace.converted_folder(demo_checkpoint) is None
    with pytest.warns(UserWarning, match="kept as settings.json.unreadable-2"):
        workspace.remember(demo_checkpoint)
    assert (workspace.root / "settings.json.unreadable").read_text() == "{not json"


def test_notebooks_remembering_at_once_never_mix_up_the_settings(workspace, tmp_path):
    """Several writers (notebooks open side by side) each add their folder: every one is kept, and no write
    fails or leaves a temporary file behind."""
    import threading

    checkpoints = [tmp_path / f"c{i}.pt" for i in range(4)]

    def write(checkpoint):
        for n in range(40):
            workspace.remember(checkpoint, tmp_path / f"{checkpoint.stem}-{n}")

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed write would warn
        threads = [threading.Thread(target=write, args=(c,)) for c in checkpoints]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    converted = workspace.settings()["converted"]
    assert converted == {str(c): str(tmp_path / f"{c.stem}-39") for c in checkpoints}
    assert sorted(p.name for p in workspace.root.iterdir()) == ["settings.json", "settings.json.lock"]


def test_the_picker_lists_checkpoints_with_sizes_and_marks_converted_folders(tmp_path, demo_checkpoint):
    from chclip_convert import convert_checkpoint

    convert_checkpoint(demo_checkpoint, demo_checkpoint.parent / "converted-hf")
    (demo_checkpoint.parent / "notes.txt").write_text("not a checkpoint")
    (demo_checkpoint.parent / ".hidden").mkdir()
    labels = [label for label, _ in folder_entries(demo_checkpoint.parent, "checkpoint")[0]]
    assert labels[0].startswith("▣ converted-hf/") and "converted model" in labels[0]
    size = demo_checkpoint.stat().st_size
    assert re.fullmatch(rf"  {DEMO_FILE}   \d+\.\d MB", labels[1]) and len(labels) == 2
    assert float(labels[1].split()[-2]) == pytest.approx(size / 1e6, abs=0.05)  # one decimal, rounded
    assert [label for label, _ in folder_entries(demo_checkpoint.parent, "output")[0]] == labels[:1]
    assert folder_entries(tmp_path / "absent", "checkpoint")[1].startswith("cannot list this folder")


def test_browsing_to_a_checkpoint_fills_the_field(tmp_path, demo_checkpoint):
    picker = PathPicker(description="Checkpoint", places={"Here": tmp_path})
    picker.browse.value = True
    assert picker.panel.layout.display == "flex" and picker.folder == tmp_path
    picker.listing.value = demo_checkpoint.parent  # a plain folder: opens it
    assert picker.folder == demo_checkpoint.parent and picker.value == ""
    picker.listing.value = demo_checkpoint
    assert picker.value == str(demo_checkpoint) and picker.panel.layout.display == "none"
    output = PathPicker(str(tmp_path / "x" / "mine-hf"), description="Output", kind="output")
    output.browse.value = True
    output.open(demo_checkpoint.parent)
    output.here.click()  # keeps the typed name, in the folder browsed to
    assert output.value == str(demo_checkpoint.parent / "mine-hf")


def test_cancel_stops_the_conversion_and_leaves_nothing_behind(demo_checkpoint, tmp_path):
    from chclip_convert import convert_checkpoint

    output = tmp_path / "out"
    (output / "notes").mkdir(parents=True)
    (output / "notes" / "keep.txt").write_text("the user's")
    ui = ConvertUI(demo_checkpoint, output)
    ui.overwrite.value = True  # refused: a folder of other files is never replaced
    assert ui.convert_button.disabled and "no converted model" in ui.output_message.value
    (output / "notes" / "keep.txt").unlink()
    (output / "notes").rmdir()
    convert_checkpoint(demo_checkpoint, output)  # an earlier conversion, which Overwrite may replace
    before = tree_sha256(output)
    ui.overwrite.value = False
    ui.overwrite.value = True
    # Click Cancel as soon as the first tensor is written, from inside the running conversion.
    ui.progress.observe(lambda change: ui.cancel_button.click() if change["new"] > 0 else None, names="value")
    ui.convert_button.click()
    assert ui.wait(timeout=60) is None and not ui.running
    assert "Cancelled: nothing was written" in ui.status.value and ui.progress.bar_style == "warning"
    assert tree_sha256(output) == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo", "out"]
    assert not ui.convert_button.disabled and ui.cancel_button.disabled and not ui.checkpoint.disabled


def test_progress_counts_tensors_and_bytes_and_the_result_belongs_to_its_inputs(demo_checkpoint, tmp_path):
    workspace = Workspace(tmp_path / "work")
    ui = ConvertUI(demo_checkpoint, tmp_path / "out", workspace=workspace)
    seen, said = [], []
    ui.progress_text.observe(lambda change: seen.append(re.sub("<[^>]+>", "", change["new"])), names="value")
    ui.status.observe(lambda change: said.append(html.unescape(re.sub("<[^>]+>", "", change["new"]))), names="value")
    ui.convert_button.click()
    assert ui.wait(timeout=60) is not None
    # Each stage is said while it lasts, in order, then the summary replaces them.
    stages = [LOADING, READING, WRITING, FINISHING]
    assert said[:-1] == [stage[0].upper() + stage[1:] + "…" for stage in stages] and "OK: source keys" in said[-1]
    counts = [re.match(r"(\d+) / (\d+) tensors · ", text) for text in seen[:-1]]
    assert all(counts) and [int(m[1]) for m in counts] == list(range(1, len(counts) + 1))
    assert int(counts[-1][2]) == len(counts) and "left" in seen[-2] and seen[-1].startswith("done in")
    # The work folder now offers this folder for this checkpoint, to the other notebooks and to a new widget.
    assert workspace.converted_folder(demo_checkpoint) == tmp_path / "out"
    again = ConvertUI(demo_checkpoint, tmp_path / "out", workspace=workspace)
    assert "Converted into this folder before" in again.output_message.value and again.convert_button.disabled
    assert "04_verify_and_save.ipynb" in again.next_steps.value
    # A new path: the old result and its links go at once, and the new path's own problem shows.
    ui.checkpoint.value = str(tmp_path / "other.pt")
    assert ui.summary is None and ui.status.value == ui.next_steps.value == ui.progress_text.value == ""
    assert "no such file" in ui.checkpoint_message.value and ui.progress.value == 0.0


def test_an_error_clears_when_its_input_is_fixed(demo_checkpoint, tmp_path):
    from chclip_convert.conversion.demo import damaged_copy

    damaged = damaged_copy(demo_checkpoint)
    ui = ConvertUI(damaged, tmp_path / "out")
    ui.convert_button.click()
    ui.wait(timeout=60)
    assert ui.error is not None and "does not map cleanly" in ui.status.value
    ui.checkpoint.value = str(demo_checkpoint)
    assert ui.error is None and ui.status.value == "" and ui.progress.bar_style == ""
    assert not ui.convert_button.disabled


def test_the_app_page_loads_neither_torch_nor_transformers(tmp_path):
    """The Voila page runs app.ipynb's cell before it shows anything: with the demo already in the work folder,
    that cell must not import the heavy libraries (seconds each); the conversion imports them when it starts."""
    work = tmp_path / "chclip-convert-work"
    write_demo_checkpoint(work / "demo")
    cell = json.loads((ROOT / "notebooks" / "app.ipynb").read_text())["cells"][1]
    probe = "".join(cell["source"]).replace(
        ".widget", ".widget\nimport sys\nprint(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "CHCLIP_WORK": str(work)}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_page_starts_on_the_work_folder_and_the_choice_made_last(tmp_path, monkeypatch, demo_checkpoint):
    """``notebook.start(page)``, the first cell of every notebook: the top of the page, on ``$CHCLIP_WORK`` and
    the checkpoint chosen last in any notebook (the training run page: the demo run, none chosen)."""
    from chclip_convert import notebook
    from chclip_convert.notebook.run_view import RunSession
    from chclip_convert.notebook.session import Session

    work = tmp_path / "chclip-convert-work"
    monkeypatch.delenv("CHCLIP_CHECKPOINT", raising=False)
    monkeypatch.setenv("CHCLIP_WORK", str(work))
    Workspace().remember(demo_checkpoint)
    converter = notebook.start(notebook.Page.CONVERTER)
    assert isinstance(converter, ConvertUI) and converter.checkpoint.value == str(demo_checkpoint)
    assert converter.output.value == str(work / "converted" / "demo_chinese_clip-hf")
    for page, needs_folder in ((notebook.Page.CHECKPOINT, False), (notebook.Page.CONVERTED, True)):
        session = notebook.start(page)
        assert isinstance(session, Session) and session.needs_folder is needs_folder
        assert session.checkpoint == demo_checkpoint and session.workspace.root == work
    run = notebook.start(notebook.Page.TRAINING_RUN)
    assert isinstance(run, RunSession) and run.is_demo and run.workspace.root == work


def test_a_picture_of_a_widget_shows_only_beside_the_demo_and_never_on_a_voila_page(monkeypatch):
    from chclip_convert import notebook

    picture = ROOT / "docs" / "inspector.png"
    for name in ("SERVER_SOFTWARE", "VOILA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert notebook.picture(picture).data == picture.read_bytes()
    assert notebook.picture(picture, of_demo=False) is None  # the demo's picture would contradict another's figure
    monkeypatch.setenv("SERVER_SOFTWARE", "voila/0.5.13")  # as Voila gives it to the kernels of its pages
    assert notebook.picture(picture) is None


def test_the_output_follows_a_new_checkpoint_until_the_user_types_one(tmp_path):
    workspace = Workspace(tmp_path / "work")
    first = write_demo_checkpoint(tmp_path / "run-a" / "checkpoints")
    second = write_demo_checkpoint(tmp_path / "run-b" / "checkpoints")
    ui = ConvertUI(first, workspace.output_for(first), workspace=workspace)
    ui.checkpoint.value = str(second)
    assert ui.output.value == str(workspace.root / "converted" / "run-b-demo_chinese_clip-hf")
    assert workspace.checkpoint() == (second, False)  # the pick is remembered for the other notebooks
    ui.output.value = str(tmp_path / "mine")
    ui.checkpoint.value = str(first)
    assert ui.output.value == str(tmp_path / "mine")


def test_the_demos_overwrite_never_carries_over_to_another_checkpoint(workspace, tmp_path):
    """Run all on the demo converts it again (Overwrite ticked for it); once the user picks their own checkpoint,
    Overwrite is unticked, and a folder that holds a conversion is refused and left byte-identical."""
    from chclip_convert import convert_checkpoint

    demo, is_demo = workspace.checkpoint()
    assert is_demo
    ui = ConvertUI(demo, workspace.output_for(demo), workspace=workspace)
    assert ui.overwrite.value and not ui.convert_button.disabled
    ui.convert_button.click()
    demo_folder = ui.wait(timeout=60).output_dir
    mine = write_demo_checkpoint(tmp_path / "run-a" / "checkpoints")  # the user's own, converted before
    folder = convert_checkpoint(mine, tmp_path / "mine-hf").output_dir
    workspace.remember(mine, folder)
    before = {path: tree_sha256(path) for path in (folder, demo_folder)}
    ui.checkpoint.value = str(mine)
    assert ui.output.value == str(folder) and not ui.overwrite.value  # the output follows; the tick does not
    for output in (folder, demo_folder):  # its own earlier conversion, and any other converted folder
        ui.output.value = str(output)
        assert not ui.overwrite.value and ui.convert_button.disabled and "tick Overwrite" in ui.output_message.value
        ui.convert_button.click()
        assert ui.wait(timeout=60) is None and not ui.running
    assert {path: tree_sha256(path) for path in before} == before
    ui.overwrite.value = True  # ticked by hand, for this checkpoint and folder: now it may replace it
    assert not ui.convert_button.disabled
    ui.output.value = str(folder)  # another folder: the tick given for the last one goes
    assert not ui.overwrite.value and ui.convert_button.disabled
    ui.checkpoint.value = str(demo)  # back to the demo: the output follows it to its folder, ticked again
    assert ui.output.value == str(demo_folder) and ui.overwrite.value
    ui.output.value = str(folder)  # the demo into the user's folder: not ticked for them
    assert not ui.overwrite.value and ui.convert_button.disabled


def test_a_folder_converted_over_is_not_offered_for_the_old_checkpoint(workspace, tmp_path):
    from chclip_convert import convert_checkpoint

    first = write_demo_checkpoint(tmp_path / "a")
    second = write_demo_checkpoint(tmp_path / "b")
    folder = tmp_path / "hf"
    convert_checkpoint(first, folder)
    workspace.remember(first, folder)
    assert workspace.converted_folder(first) == folder
    convert_checkpoint(second, folder, overwrite=True)  # its report now names the second checkpoint
    assert workspace.converted_folder(first) is None


def test_a_folder_whose_record_names_its_checkpoint_by_name_alone_is_still_offered(workspace, tmp_path):
    """A checkpoint and a folder that share no folder but the root (/tmp and the home, say): the report, made
    for sharing, names the checkpoint by its file name alone. The workspace still knows the folder by the digest
    it remembered; converted over from another checkpoint of the same name, it is not offered."""
    import tempfile

    from chclip_convert import convert_checkpoint

    bases = [Path(base) for base in ("/dev/shm", "/var/tmp", Path.home()) if Path(base).is_dir()]
    base = next(b for b in bases if os.access(b, os.W_OK) and os.path.commonpath([b, tmp_path]) == os.sep)
    elsewhere = Path(tempfile.mkdtemp(prefix="chclip-test-", dir=base))
    try:
        first = write_demo_checkpoint(tmp_path / "a")
        folder = elsewhere / "hf"
        convert_checkpoint(first, folder)
        assert json.loads((folder / "conversion_report.json").read_text())["source"] == first.name
        workspace.remember(first, folder)
        assert workspace.converted_folder(first) == folder
        other = write_demo_checkpoint(tmp_path / "b", seed=1)  # the same file name, other weights
        convert_checkpoint(other, folder, overwrite=True)
        workspace.remember(other, folder)  # as the notebooks remember every conversion
        assert workspace.converted_folder(first) is None
        assert workspace.converted_folder(other) == folder
    finally:
        shutil.rmtree(elsewhere)


def test_the_launchers_checkpoint_opens_until_another_is_picked(workspace, tmp_path, monkeypatch):
    given = write_demo_checkpoint(tmp_path / "given")
    picked = write_demo_checkpoint(tmp_path / "picked")
    monkeypatch.setenv("CHCLIP_CHECKPOINT", str(given))
    assert workspace.checkpoint() == (given, False)
    workspace.remember(picked)  # a pick in any notebook
    assert workspace.checkpoint() == (picked, False)
    monkeypatch.setenv("CHCLIP_CHECKPOINT", str(tmp_path / "new.pt"))  # a new launch, with another checkpoint
    assert workspace.checkpoint() == (tmp_path / "new.pt", False)


def test_a_folder_the_user_may_not_enter_is_said_not_raised():
    """As a user other than the folder's owner (root looks as nobody, through its effective uid): the picker
    leaves the locked folder out, and a checkpoint path through it gets a message, not a traceback from the
    field's observer."""
    from chclip_convert.notebook.converter import validate_inputs

    with locked_folder("inner") as (base, locked):
        listing = folder_entries(base, "checkpoint")[0]
        problems = validate_inputs(str(locked / "inner" / "a.pt"), str(base / "out"), "", False)
    assert listing == [] and "cannot be read: Permission denied" in problems["checkpoint"]


def test_converting_the_demo_on_the_side_keeps_the_users_choice(workspace, demo_checkpoint):
    """03's damaged-copy section converts the embedded demo; the checkpoint the user chose stays chosen."""
    workspace.remember(demo_checkpoint)  # a checkpoint outside the work folder, picked by the user
    demo = workspace.demo_checkpoint()
    folder = workspace.ensure_converted(demo)
    assert workspace.checkpoint() == (demo_checkpoint, False)
    assert workspace.converted_folder(demo) == folder  # the side conversion is remembered for next time

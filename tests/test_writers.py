"""Writers never publish a wrong folder and never fail untidily: one writer per output (two real processes
converting into one folder at once), what a killed writer left, a full disk (a real one: a small tmpfs in a
mount namespace of its own), Ctrl-C, and a batch that goes on past one checkpoint's failure."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.files import in_small_disk
from support.original import REDUCED, build_model, save, training_checkpoint

from chclip_convert import OutputError, convert_checkpoint, reverse_folder
from chclip_convert.changes.diff import diff_checkpoints
from chclip_convert.changes.epochs import CONVERTED, FAILED, convert_epochs
from chclip_convert.conversion.demo import write_demo_checkpoint
from chclip_convert.files.output import OutputBusyError, output_lock

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
CLI = [sys.executable, "-m", "chclip_convert"]


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory) -> Path:
    """A reduced ViT-H-14 (~360 MB of weights), in several tensors: a writer held after its first is mid-write."""
    return save(training_checkpoint(build_model(REDUCED["ViT-H-14"], seed=5)), tmp_path_factory.mktemp("big") / "h.pt")


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    return write_demo_checkpoint(tmp_path_factory.mktemp("demo"))


def partials(output: Path) -> list[Path]:
    return list(output.parent.glob(output.name + ".chclip-partial*"))


# The command line, held after its first tensor until the gate file (its first argument) appears, or a minute
# has passed: a writer the tests meet mid-write however fast the conversion is.
HELD_CLI = r"""
import sys, time
from pathlib import Path
from chclip_convert.cli.main import main
from chclip_convert.files import safetensors_writer

gate, write = Path(sys.argv[1]), safetensors_writer.write_safetensors

def held(files, tensors, *, progress=None):
    def each(event):
        if progress is not None:
            progress(event)
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return write(files, tensors, progress=each)

safetensors_writer.write_safetensors = held
sys.exit(main(sys.argv[2:]))
"""


def start_writing(checkpoint: Path, output: Path) -> tuple[subprocess.Popen, Path]:
    """A conversion in its own process, held once it has begun filling its temporary folder, and the gate file
    whose creation lets it go on."""
    gate = output.parent / f"{output.name}.go"
    command = [sys.executable, "-c", HELD_CLI, str(gate), str(checkpoint), str(output), "--no-progress"]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not partials(output) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the conversion ended before it could be met writing"
    return process, gate


def assert_is_conversion_of(folder: Path, checkpoint: Path) -> None:
    """The folder's weights are exactly the checkpoint's, and its report names that checkpoint."""
    record = json.loads((folder / "conversion_report.json").read_text(encoding="utf-8"))
    assert Path(record["source"]).name == checkpoint.name
    diff = diff_checkpoints(checkpoint, folder)
    assert diff.identical, diff.to_text()


@pytest.mark.slow  # a reduced ViT-H-14 written in another process
def test_a_second_process_is_refused_at_once_while_the_first_writes(big_checkpoint, small_checkpoint, tmp_path):
    output = tmp_path / "converted" / "model-hf"
    first, gate = start_writing(big_checkpoint, output)
    second = subprocess.run(
        [*CLI, str(small_checkpoint), str(output), "--overwrite", "--no-progress"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.poll() is None, "the first conversion ended before the second was refused: no contest"
    assert second.returncode == 1, second.stderr
    says = f"error: {output}: another conversion (process {first.pid}) is writing this output right now"
    assert second.stderr.startswith(says), second.stderr
    assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
    gate.touch()
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr.decode()
    assert_is_conversion_of(output, big_checkpoint)  # the refused writer removed nothing of the first's
    gate.unlink()
    assert sorted(p.name for p in output.parent.iterdir()) == ["model-hf"], "a partial folder or lock was left"


@pytest.mark.slow  # a reduced ViT-H-14 written in another process
def test_two_processes_started_together_never_leave_a_mislabelled_folder(big_checkpoint, small_checkpoint, tmp_path):
    output = tmp_path / "model-hf"
    commands = [[*CLI, str(c), str(output), "--overwrite", "--no-progress"] for c in (big_checkpoint, small_checkpoint)]
    processes = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in commands]
    outcomes = [(p.wait(timeout=300), p.stderr.read().decode()) for p in processes]
    assert all("Traceback" not in stderr for _, stderr in outcomes), outcomes
    assert all(code in (0, 1) for code, _ in outcomes) and any(code == 0 for code, _ in outcomes), outcomes
    for code, stderr in outcomes:  # refused by the lock; both may also succeed, one after the other
        assert code == 0 or "another conversion" in stderr, stderr
    record = json.loads((output / "conversion_report.json").read_text(encoding="utf-8"))
    named = big_checkpoint if Path(record["source"]).name == big_checkpoint.name else small_checkpoint
    assert_is_conversion_of(output, named)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-hf"]


def test_another_thread_holding_the_output_refuses_convert_and_reverse(small_checkpoint, tmp_path):
    folder = convert_checkpoint(small_checkpoint, tmp_path / "hf").output_dir
    held, release = threading.Event(), threading.Event()

    def hold(target: Path) -> None:
        with output_lock(target):
            held.set()
            release.wait(60)

    for target, write in (
        (tmp_path / "other-hf", lambda: convert_checkpoint(small_checkpoint, tmp_path / "other-hf")),
        (tmp_path / "back.pt", lambda: reverse_folder(folder, tmp_path / "back.pt")),
    ):
        held.clear(), release.clear()
        holder = threading.Thread(target=hold, args=(target,))
        holder.start()
        assert held.wait(60)
        with pytest.raises(OutputBusyError, match="another conversion in this process is writing this output"):
            write()
        release.set()
        holder.join()
        assert not target.exists()
        write()  # the lock is gone with its holder
        assert target.exists()


def test_a_folder_set_aside_by_a_killed_replacement_is_put_back(small_checkpoint, tmp_path):
    """Killed between moving the user's folder aside and moving the new one in: the next writer restores it."""
    output = tmp_path / "hf"
    convert_checkpoint(small_checkpoint, output)
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    output.rename(tmp_path / "hf.chclip-old")
    (tmp_path / "hf.chclip-partial-killed").mkdir()
    with pytest.raises(OutputError, match="exists and is not empty; nothing was written"):
        convert_checkpoint(small_checkpoint, output)
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_a_library_error_while_writing_is_a_clean_error_and_the_batch_goes_on(
    small_checkpoint, tmp_path, monkeypatch, capsys
):
    """The tokenizers library reports a full disk as a plain ``Exception`` ending ``(os error 28)``."""
    from chclip_convert.files import assets

    real, calls = assets.write_tokenizer, []

    def disk_full_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise Exception("No space left on device (os error 28)")
        return real(*args, **kwargs)

    monkeypatch.setattr(assets, "write_tokenizer", disk_full_once)
    second = tmp_path / "run-b" / "checkpoints" / small_checkpoint.name  # cn_clip's layout: run-b-…-hf
    second.parent.mkdir(parents=True)
    shutil.copy(small_checkpoint, second)
    shutil.copy(small_checkpoint.with_name("vocab.txt"), second.with_name("vocab.txt"))
    results = convert_epochs([small_checkpoint, second], tmp_path / "into")
    assert [r.outcome for r in results] == [FAILED, CONVERTED], [r.detail for r in results]
    assert f"{results[0].folder}: writing failed: No space left on device; nothing was changed" in results[0].detail
    assert [p.name for p in (tmp_path / "into").iterdir()] == [results[1].folder.name]


@pytest.mark.slow  # another Python process
def test_a_full_disk_ends_in_one_paragraph_and_leaves_nothing(small_checkpoint, tmp_path):
    # 1 MiB holds the config and tokenizer files but not the demo's 4 MB of weights.
    done = in_small_disk(tmp_path, "1m", f'$PY {shlex.quote(str(small_checkpoint))} "$DISK/out" --no-progress')
    assert done.stdout.splitlines()[-1] == "rc=1", done.stdout + done.stderr
    assert "/disk/out: writing failed: No space left on device; nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.slow  # another Python process
def test_reverse_on_a_full_disk_says_no_space_left(small_checkpoint, tmp_path):
    folder = convert_checkpoint(small_checkpoint, tmp_path / "hf").output_dir
    done = in_small_disk(tmp_path, "1m", f'$PY reverse {shlex.quote(str(folder))} "$DISK/back.pt"')
    assert done.stdout.splitlines()[-1] == "rc=1", done.stdout + done.stderr
    assert "/disk/back.pt: writing failed: No space left on device; nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr and "enforce fail" not in done.stderr, done.stderr


@pytest.mark.slow  # a reduced ViT-H-14 written in another process
def test_a_batch_on_a_full_disk_converts_what_fits(big_checkpoint, small_checkpoint, tmp_path):
    # 64 MiB: the demo's folder fits, the reduced ViT-H-14's 360 MB do not.
    paths = " ".join(shlex.quote(str(p)) for p in (big_checkpoint, small_checkpoint))
    done = in_small_disk(tmp_path, "64m", f'$PY convert-epochs --into "$DISK" {paths} --no-progress')
    lines = done.stdout.splitlines()
    assert lines[-2] == "rc=1" and lines[-1] == "demo_chinese_clip-hf", done.stdout + done.stderr
    assert "h.pt: failed →" in done.stdout and "writing failed: No space left on device" in done.stdout
    assert "demo_chinese_clip.pt: converted →" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow  # a reduced ViT-H-14 written in another process
def test_ctrl_c_ends_with_one_line_and_nothing_left(big_checkpoint, tmp_path):
    output = tmp_path / "out"
    process, _ = start_writing(big_checkpoint, output)  # held: interrupted mid-write
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr.decode()
    assert stderr.decode().strip() == "interrupted: stopped, and nothing half-written was left behind."
    assert list(tmp_path.iterdir()) == [], "a partial folder, a lock or an output was left"


@pytest.mark.slow  # another Python process
def test_convert_epochs_into_a_file_says_so(small_checkpoint, tmp_path):
    into = tmp_path / "into"
    into.write_text("not a folder")
    done = subprocess.run([*CLI, "convert-epochs", "--into", str(into), str(small_checkpoint), "--no-progress"],
                          env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr == f"error: {into}: is a file, not a folder; give the folder to write the converted folders into.\n"
    )
    assert into.read_text() == "not a folder"


@pytest.mark.slow  # another Python process
def test_a_dangling_link_in_a_run_folder_is_named_not_dropped(tmp_path):
    from chclip_convert.conversion.demo import write_demo_run

    reference, epochs = write_demo_run(tmp_path / "run")
    epochs[-1].unlink()  # epoch_latest.pt repeats epoch 3: not needed here
    gone = tmp_path / "unmounted" / "epoch4.pt"
    link = epochs[0].with_name("epoch4.pt")
    link.symlink_to(gone)
    drift = subprocess.run([*CLI, "drift", "--reference", str(reference), str(tmp_path / "run")],
                           env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert drift.returncode == 0, drift.stderr
    says = f"skipped: {link} is a link to {gone}, which does not exist (a disk not mounted?)"
    assert says in drift.stdout.splitlines()
    batch = subprocess.run(
        [*CLI, "convert-epochs", "--into", str(tmp_path / "hf"), str(tmp_path / "run"), "--no-progress", "--json"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert says in batch.stderr.splitlines(), batch.stderr
    assert [Path(r["checkpoint"]).name for r in json.loads(batch.stdout)] == ["epoch1.pt", "epoch2.pt", "epoch3.pt"]


def test_a_published_folder_has_the_umasks_mode_like_any_new_folder(small_checkpoint, tmp_path):
    folder = convert_checkpoint(small_checkpoint, tmp_path / "hf").output_dir
    (tmp_path / "plain").mkdir()  # what the umask gives a folder here
    assert folder.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_outputs_named_by_dot_by_root_or_through_a_link(small_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(OutputError, match="exists and is not empty; nothing was written"):
        convert_checkpoint(small_checkpoint, ".")
    with pytest.raises(OutputError, match="is the root folder"):
        convert_checkpoint(small_checkpoint, "/")
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["notes.txt"]
    real = convert_checkpoint(small_checkpoint, tmp_path / "big-disk" / "real-hf").output_dir
    link = tmp_path / "link-hf"
    link.symlink_to(real)
    other = write_demo_checkpoint(tmp_path / "other", seed=3)
    convert_checkpoint(other, link, overwrite=True)  # replaces what the link points to; the link stays
    assert link.is_symlink() and link.resolve() == real
    assert_is_conversion_of(real, other)
    assert sorted(p.name for p in real.parent.iterdir()) == ["real-hf"]


def test_ctrl_c_between_the_two_renames_puts_the_users_folder_back(small_checkpoint, tmp_path, monkeypatch):
    output = convert_checkpoint(small_checkpoint, tmp_path / "hf").output_dir
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    real_rename, calls = Path.rename, []

    def interrupted_second_rename(self, target):
        calls.append(self)
        if len(calls) == 2:  # the new folder moving in, after the user's was set aside
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted_second_rename)
    with pytest.raises(KeyboardInterrupt):
        convert_checkpoint(small_checkpoint, output, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def test_a_set_aside_folder_is_kept_unless_a_complete_conversion_replaced_it(small_checkpoint, tmp_path):
    output = tmp_path / "hf"
    output.mkdir()
    (output / "new.txt").write_text("made by hand after a writer was killed")
    aside = tmp_path / "hf.chclip-old"
    aside.mkdir()
    (aside / "only-copy.txt").write_text("the user's")
    with pytest.raises(OutputError, match="exists and is not empty"):
        convert_checkpoint(small_checkpoint, output)
    assert (aside / "only-copy.txt").read_text() == "the user's", "a folder that may be the only copy was removed"


def test_threads_of_one_process_racing_for_one_output(small_checkpoint, tmp_path):
    output, barrier, outcomes = tmp_path / "hf", threading.Barrier(6), []

    def race() -> None:
        barrier.wait()
        try:
            convert_checkpoint(small_checkpoint, output)
            outcomes.append("written")
        except OutputBusyError as error:
            outcomes.append("busy" if "another conversion in this process" in str(error) else str(error))
        except OutputError as error:  # came after the winner had finished: the folder exists now
            outcomes.append("exists" if "exists and is not empty" in str(error) else str(error))

    threads = [threading.Thread(target=race) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("written") == 1 and set(outcomes) <= {"written", "busy", "exists"}, outcomes
    assert_is_conversion_of(output, small_checkpoint)


def test_up_to_date_folders_need_no_lock(small_checkpoint, tmp_path, monkeypatch):
    """A read-only place of up-to-date folders works: the lock (a file beside the folder) is taken only to write."""
    from chclip_convert.changes import epochs as epoch_conversion

    [first] = convert_epochs([small_checkpoint], tmp_path / "into")

    def no_lock(target):
        raise AssertionError(f"locked {target} although nothing was to be written")

    monkeypatch.setattr(epoch_conversion, "output_lock", no_lock)
    [again] = convert_epochs([small_checkpoint], tmp_path / "into")
    assert (first.outcome, again.outcome) == (CONVERTED, "up to date")


def test_reverse_with_an_unreadable_report_writes_the_defaults(small_checkpoint, tmp_path, monkeypatch):
    folder = convert_checkpoint(small_checkpoint, tmp_path / "hf").output_dir
    report, real_read = folder / "conversion_report.json", Path.read_text

    def denied(self, *args, **kwargs):  # a chmod 000 file, which root (running these tests) could still read
        if self == report:
            raise PermissionError(13, "Permission denied")
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    summary = reverse_folder(folder, tmp_path / "back.pt")
    assert summary.training.values["epoch"] == 0
    assert "cannot read conversion_report.json: Permission denied" in summary.training.origin


@pytest.mark.slow  # another Python process
def test_output_piped_into_head_ends_quietly(small_checkpoint):
    shown = subprocess.run(
        f"{shlex.join([*CLI, 'inspect', str(small_checkpoint)])} | head -1; echo rc=${{PIPESTATUS[0]}}",
        shell=True, executable="/bin/bash", env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert shown.stdout.splitlines()[-1] in ("rc=0", "rc=141"), shown.stdout  # 0 if it all fit in the pipe
    assert "Traceback" not in shown.stderr and "BrokenPipe" not in shown.stderr, shown.stderr


@pytest.mark.slow  # another Python process
def test_a_dangling_link_given_by_name_says_where_it_points(tmp_path):
    link = tmp_path / "epoch4.pt"
    link.symlink_to(tmp_path / "unmounted" / "epoch4.pt")
    done = subprocess.run([*CLI, str(link), str(tmp_path / "hf")], env=ENV, capture_output=True, text=True)
    assert done.returncode == 1
    assert f"{link}: is a link to {tmp_path / 'unmounted' / 'epoch4.pt'}, which does not exist" in done.stderr


@pytest.mark.slow  # another Python process
def test_convert_epochs_refuses_an_into_below_a_file_before_anything_else(tmp_path):
    from chclip_convert.conversion.demo import write_demo_run

    write_demo_run(tmp_path / "run")  # its epoch_latest.pt repeats epoch 3: said only once --into is usable
    (tmp_path / "notes.txt").write_text("")
    into = tmp_path / "notes.txt" / "sub"
    done = subprocess.run([*CLI, "convert-epochs", "--into", str(into), str(tmp_path / "run"), "--no-progress"],
                          env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"error: {into}: is a file, not a folder ({tmp_path / 'notes.txt'} is a file); give the folder to write the "
        "converted folders into.\n"
    )


@pytest.mark.slow  # another Python process
def test_verify_with_a_cn_clip_that_does_not_import_says_so(small_checkpoint, tmp_path):
    """cn_clip installed with --no-deps and nothing else: verify goes on without it and says why."""
    folder = convert_checkpoint(small_checkpoint, tmp_path / "hf").output_dir
    broken = tmp_path / "site" / "cn_clip"
    (broken / "clip").mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "clip" / "__init__.py").write_text("import a_module_cn_clip_needs\n")
    done = subprocess.run([*CLI, "verify", str(small_checkpoint), str(folder)], capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(tmp_path / "site")}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cn_clip is installed but does not import (No module named 'a_module_cn_clip_needs')" in done.stdout
    assert "Traceback" not in done.stderr

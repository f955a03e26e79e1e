"""The one progress event, the command line's bar it feeds, and the widgets' background task with Cancel."""

from __future__ import annotations

import io
import threading

import pytest

from chclip_convert import convert_checkpoint
from chclip_convert.cli.progress_bar import ProgressBar, describe
from chclip_convert.conversion.pipeline import FINISHING, READING
from chclip_convert.notebook.background import BackgroundTask
from chclip_convert.progress import WRITING, Progress


def test_fraction_is_done_over_total_capped_and_whole_when_there_is_nothing_to_do():
    assert Progress(1, 4).fraction == 0.25 and Progress(5, 4).fraction == 1.0 and Progress(0, 0).fraction == 1.0


def final_line(stream: io.StringIO) -> str:
    return stream.getvalue().split("\r")[-1].strip()


def test_the_bar_takes_its_total_from_the_first_event_and_stands_where_the_last_one_left_it():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for done in (0, 2, 5):
        bar.update(Progress(done, 10, stage="comparing tensors"))
    bar.close()
    line = final_line(stream)
    assert line.startswith("comparing tensors:") and " 50%" in line and "5/10" in line


def test_the_bar_counts_bytes_over_a_batch_and_names_the_checkpoint_at_hand():
    stream = io.StringIO()
    bar = ProgressBar(stream)
    bar.update(Progress(0, 3000, "B", "checking", item="/runs/a/checkpoints/epoch1.pt", index=1, count=2))
    bar.update(Progress(3000, 3000, "B", "done", item="/runs/a/checkpoints/epoch3.pt", index=2, count=2))
    bar.close()
    line = final_line(stream)
    assert line.startswith("2/2 epoch3.pt done:") and "100%" in line and "3.00k/3.00k" in line


def test_the_bar_draws_nothing_without_an_event():
    stream = io.StringIO()
    ProgressBar(stream).close()
    assert stream.getvalue() == ""


def test_a_stage_alone_is_described_as_it_is():
    assert describe(Progress(1, 2, "B", "writing weights", index=1, count=9)) == "writing weights"


def test_busy_from_start_until_the_end_is_shown_and_a_second_start_is_refused():
    release, busy, ends = threading.Event(), [], []
    task = BackgroundTask(on_progress=[].append, on_busy=busy.append)

    def work(progress) -> str:
        assert release.wait(30)
        return "the result"

    assert task.start(work, on_end=lambda task: ends.append((task.busy, task.result)))
    assert task.busy and task.running and busy == [True]
    assert not task.start(work, on_end=ends.append) and not task.wait(timeout=0.05)
    release.set()
    assert task.wait(timeout=30)
    assert ends == [(True, "the result")] and busy == [True, False] and not task.busy and not task.running


def test_an_error_is_delivered_and_the_task_is_idle_after():
    ends = []
    task = BackgroundTask(on_progress=[].append, on_busy=[].append)
    task.start(lambda progress: 1 / 0, on_end=lambda task: ends.append(task.error))
    assert task.wait(timeout=30)
    assert len(ends) == 1 and isinstance(ends[0], ZeroDivisionError) and task.error is ends[0]
    assert task.result is None and not task.cancelled and not task.busy


def test_cancel_stops_the_work_at_its_next_event():
    shown = []
    task = BackgroundTask(on_progress=shown.append, on_busy=[].append)

    def work(progress) -> None:
        for done in range(1, 101):
            progress(Progress(done, 100))
            if done == 3:
                assert task.cancel()

    task.start(work, on_end=lambda task: None)
    assert task.wait(timeout=30)
    assert task.cancelled and task.error is None and [event.done for event in shown] == [1, 2, 3]
    assert not task.cancel() and task.cancel_requested  # nothing left to cancel; the request was the last task's


@pytest.mark.parametrize("cancel_at", [0, 1, 5])  # 0: as the conversion begins, before any tensor is written
def test_cancel_stops_a_running_conversion_and_leaves_nothing_behind(demo_checkpoint, tmp_path, cancel_at):
    before = sorted(tmp_path.rglob("*"))
    shown = []

    def on_progress(progress: Progress) -> None:
        if progress.stage == READING and cancel_at == 0:
            task.cancel()
        elif progress.stage == WRITING:
            shown.append(progress.index)
            if progress.index == cancel_at:
                task.cancel()

    def convert(progress):
        return convert_checkpoint(demo_checkpoint, tmp_path / "out", progress=progress)

    task = BackgroundTask(on_progress, on_busy=lambda busy: None)
    task.start(convert, on_end=lambda task: None)
    assert task.wait(timeout=120)
    assert task.cancelled and task.result is None and shown == list(range(1, cancel_at + 1))
    assert sorted(tmp_path.rglob("*")) == before  # no folder, partial or not, and no lock file
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("chclip-")]


def test_a_conversion_says_each_stage_in_order(demo_checkpoint, tmp_path):
    events = []
    convert_checkpoint(demo_checkpoint, tmp_path / "out", progress=events.append)
    stages = [event.stage for event in events]
    assert stages[0] == READING and not events[0].counted and events[0].fraction == 0.0  # nothing counted yet
    assert set(stages[1:-1]) == {WRITING} and stages[-1] == FINISHING
    assert events[-1].fraction == 1.0 and events[-1].total == events[-2].total  # the weights' bytes, all written


def test_the_bar_waits_for_a_count_and_then_names_each_stage():
    out = io.StringIO()
    bar = ProgressBar(file=out)
    bar.update(Progress.starting(READING))
    assert out.getvalue() == ""  # a stage that only begins draws no empty bar
    bar.update(Progress(5, 10, "B", WRITING))
    bar.update(Progress(10, 10, "B", FINISHING))
    bar.close()
    assert WRITING in out.getvalue() and FINISHING in out.getvalue().splitlines()[-1]

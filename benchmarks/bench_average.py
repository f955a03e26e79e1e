"""Wall time and peak memory of ``average`` and ``slim`` on full-size checkpoints, against the targets.

    .venv/bin/python benchmarks/bench_average.py [--runs 3] [--cache DIR] [--only average|slim] [--keep]

Checkpoints are seeded and live in --cache (default ~/.cache/chclip-convert-bench), beside bench_convert's:

- ``average-run/epoch{1..5}.pt``: five ViT-B-16 fp32 epochs in cn_clip's layout with AdamW state (2.3 GB a file,
  11.5 GB in all), each the one before moved a little (bench_diff's ``move_epoch``); deleted unless --keep;
- ``vit-h-14-fp16-adamw.pt``: bench_convert's ViT-H-14 fp16 training dict with AdamW state (8.9 GiB), kept.

average: ``chclip-convert average --into OUT`` over the first 2 and all 5 epochs, each in a fresh process, against
the floor: a fresh process that opens the same files (memory-mapped) and copies every model tensor's bytes once
(bench_convert's READ_WEIGHTS). Targets: peak anonymous memory ≤ 1 GiB and flat from 2 to 5 inputs; wall ≤ 2× the
floor.

slim: ``chclip-convert slim`` of the ViT-H-14 AdamW checkpoint against ``cp`` of a file holding its weights (a
slim output itself), each into a new file. Target: ≤ 2× the ``cp``.

Each command runs once as a warm-up (so the page cache holds the inputs' weights: the numbers are CPU, memory and
writing, not reading a cold disk), then --runs times, taking turns; medians. Peak anon is ``RssAnon`` sampled every
10 ms (bench_convert's ``measure``): the process's own memory, which file-backed pages are not.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench_convert import CHECKPOINTS, build_checkpoint
from bench_diff import (
    ANON_TARGET_MIB,
    READ_BOTH,
    TIME_TARGET,
    Sample,
    load_state,
    log,
    move_epoch,
    reference_checkpoint,
    run_sections,
    run_turns,
    save_epoch,
    timed,
)

RUN_FOLDER = "average-run"
EPOCHS = 5
INPUT_COUNTS = (2, 5)
SLIM_INPUT = "vit-h-14-fp16-adamw"


def build_epochs(cache: Path) -> list[Path]:
    """Epochs 1..5 from bench_diff's reference, reusing the complete ones already there."""

    paths = [cache / RUN_FOLDER / "checkpoints" / f"epoch{n}.pt" for n in range(1, EPOCHS + 1)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    state = None
    for epoch, path in enumerate(paths, 1):
        if path.exists():
            state = None
            continue
        if state is None:
            state = load_state(paths[epoch - 2] if epoch > 1 else reference_checkpoint(cache))
        state = move_epoch(state, epoch)
        save_epoch(state, epoch, path, name=RUN_FOLDER, seed=3000 + epoch)
    return paths


def bench_average(cache: Path, runs: int, keep: bool) -> list[str]:
    python = sys.executable
    try:
        paths = [str(p) for p in build_epochs(cache)]
        with tempfile.TemporaryDirectory(dir=cache) as work:
            seconds = Path(work) / "floor"
            commands = {}
            for count in INPUT_COUNTS:
                out = str(Path(work) / f"avg{count}.pt")
                average = [python, "-m", "chclip_convert", "average", "--into", out, "--overwrite", "--no-progress"]
                commands[f"floor {count}"] = timed([python, "-c", READ_BOTH, *paths[:count], str(seconds)], seconds)
                commands[f"average {count}"] = timed([*average, *paths[:count]])
            results = run_turns(commands, runs)
    finally:
        if not keep:
            shutil.rmtree(cache / RUN_FOLDER, ignore_errors=True)
            log(f"deleted {cache / RUN_FOLDER}")
    return average_table(results)


def average_table(results: dict[str, Sample]) -> list[str]:
    lines = [
        "| inputs | average s | read the inputs' weights s | ratio | peak anon MiB | peak RSS MiB | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in INPUT_COUNTS:
        run, floor = results[f"average {count}"], results[f"floor {count}"]
        ratio = run[0] / floor[0]
        missed = [w for w, bad in (("time", ratio > TIME_TARGET), ("memory", run[1] > ANON_TARGET_MIB)) if bad]
        verdict = f"MISSED ({', '.join(missed)})" if missed else "ok"
        lines.append(
            f"| {count} | {run[0]:.2f} | {floor[0]:.2f} | {ratio:.2f}× | {run[1]:.0f} | {run[2]:.0f} | {verdict} |"
        )
    few, many = results[f"average {INPUT_COUNTS[0]}"][1], results[f"average {INPUT_COUNTS[-1]}"][1]
    limit = few * 1.10 + 50  # as bench_diff's drift: sampling and allocator caches wobble by tens of MiB
    lines.append(
        f"\npeak anon {many:.0f} MiB with {INPUT_COUNTS[-1]} inputs vs {few:.0f} MiB with {INPUT_COUNTS[0]} "
        f"(tolerance ≤ {limit:.0f} MiB): **{'flat' if many <= limit else 'NOT FLAT'}**; targets: ≤ {TIME_TARGET:g}× "
        f"the floor, anon ≤ {ANON_TARGET_MIB} MiB"
    )
    return lines


def bench_slim(cache: Path, runs: int) -> list[str]:
    source = cache / f"{SLIM_INPUT}.pt"
    if not source.exists():
        log(f"building {source} …")
        build_checkpoint(source, *CHECKPOINTS[SLIM_INPUT])
    with tempfile.TemporaryDirectory(dir=cache) as work:
        weights, slimmed, copied = Path(work) / "weights.pt", Path(work) / "slim.pt", Path(work) / "copy.pt"
        slim = [sys.executable, "-m", "chclip_convert", "slim", str(source), str(slimmed), "--no-progress"]
        timed([*slim[:-2], str(weights), "--no-progress"])()  # the weights file cp copies
        results = run_turns(
            {
                "slim": into_fresh_file(slimmed, timed(slim)),
                "cp": into_fresh_file(copied, timed(["cp", str(weights), str(copied)])),
            },
            runs,
        )
        size = weights.stat().st_size
    run, cp = results["slim"], results["cp"]
    ratio = run[0] / cp[0]
    verdict = "ok" if ratio <= TIME_TARGET and run[1] <= ANON_TARGET_MIB else "MISSED"
    return [
        "| what | seconds | peak anon MiB | peak RSS MiB | ratio to cp | verdict |",
        "|---|---|---|---|---|---|",
        f"| `chclip-convert slim` ({source.stat().st_size / 2**30:.2f} GiB in) | {run[0]:.2f} | {run[1]:.0f} | "
        f"{run[2]:.0f} | {ratio:.2f}× | {verdict} |",
        f"| `cp` of its weights ({size / 2**30:.2f} GiB) | {cp[0]:.2f} | {cp[1]:.0f} | {cp[2]:.0f} | 1.00× | |",
    ]


def into_fresh_file(path: Path, run: Callable[[], Sample]) -> Callable[[], Sample]:
    """``run`` after removing ``path``, so that each run writes a new file, as a user's ``slim`` or ``cp`` does
    (replacing a file costs more on ext4: it writes the new data out; bench_convert's ``into_fresh``)."""

    def fresh() -> Sample:
        path.unlink(missing_ok=True)
        return run()

    return fresh


def main() -> None:
    run_sections(__doc__.split("\n")[0], "keep the five epoch files (11.5 GB) in the cache", {
        "average": ("average of ViT-B-16 fp32 epochs with AdamW state", bench_average),
        "slim": ("slim of a ViT-H-14 fp16 checkpoint with AdamW state",
                 lambda cache, runs, keep: bench_slim(cache, runs)),
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""Wall time and peak memory of ``diff`` and ``drift`` on full-size ViT-B-16 checkpoints, against the targets.

    .venv/bin/python benchmarks/bench_diff.py [--runs 3] [--cache DIR] [--only diff|drift] [--keep]

Checkpoints are seeded and live in --cache (default ~/.cache/chclip-convert-bench), beside bench_convert's:

- A, ``vit-b-16-fp32.pt``: bench_convert's ViT-B-16 training dict, fp32, no optimizer (built if missing);
- B, ``vit-b-16-fp32-moved-adamw.pt``: A with every tensor moved (W + 1e-3·noise), so no tensor takes the
  equal-tensors fast path, plus AdamW state (fp32 ``exp_avg`` and ``exp_avg_sq`` per parameter), which a diff
  must never read. Kept in the cache, like bench_convert's checkpoints (2.3 GB);
- ``drift-run/checkpoints/epoch{1..10}.pt``: a training run started from A in cn_clip's layout (``epoch``,
  ``step``, ``name``, ``state_dict`` with ``module.`` keys, ``optimizer``), each epoch the previous one moved a
  little (the last two text layers and both projections five times more than the rest), with AdamW state:
  2.3 GB a file, 23 GB in all. Built only with room to spare (30 GB free for all ten), reused when present and
  complete, deleted at the end unless --keep.

diff: ``chclip-convert diff A B`` in a fresh process, against the floor: a fresh process that opens both files
(``load_checkpoint``, memory-mapped) and copies every model tensor's bytes once (bench_convert's READ_WEIGHTS,
once per file), with torch's default threads and with one (on a shared CPU the thread pool makes those copies
slower); ratios are to the faster. Each is also timed in-process, imports excluded: ``diff_checkpoints(A, B)``
against the floor's reading. Targets: peak anonymous memory ≤ 1 GiB, time ≤ 2× the floor.

drift: ``chclip-convert drift --reference A`` over the first 2, 5 and 10 epochs, each in a fresh process.
Target: peak anonymous memory flat in the number of epochs.

Each command runs once as a warm-up (so the page cache holds every file's weights for every run, and the
numbers are CPU and memory, not disk), then --runs times, the commands taking turns; medians. ``RssAnon`` and
``VmRSS`` (/proc/PID/status) are sampled every 10 ms: peak anon is the process's own memory; peak RSS also
counts the memory-mapped file pages the process touched, which the kernel can drop at any time.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from bench_convert import READ_WEIGHTS, VIT_B_16, adamw_state, build_checkpoint, cpu_model, has_sha_ni, measure

REFERENCE = "vit-b-16-fp32.pt"
MOVED = "vit-b-16-fp32-moved-adamw.pt"
RUN_FOLDER = "drift-run"
EPOCHS = 10
EPOCH_COUNTS = (2, 5, 10)
EPOCH_BYTES = 2.3e9  # weights 0.75 GB + AdamW moments 1.5 GB
SPARE_BYTES = 7e9  # so 10 epochs need 30 GB free, leaving the disk some room
MIB = 1024
ANON_TARGET_MIB = 1024
TIME_TARGET = 2.0
FAST_MOVERS = ("bert.encoder.layer.10.", "bert.encoder.layer.11.", "text_projection", "visual.proj")

DIFF_IN_PROCESS = r"""
import sys, time
from pathlib import Path
from chclip_convert.changes.diff import diff_checkpoints

started = time.perf_counter()
diff_checkpoints(sys.argv[1], sys.argv[2])
Path(sys.argv[3]).write_text(repr(time.perf_counter() - started))
"""

READ_BOTH = f"""
import sys, time
from pathlib import Path
import torch
from chclip_convert.files.checkpoint import load_checkpoint

*checkpoints, seconds_to = sys.argv[1:]
started = time.perf_counter()
for checkpoint in checkpoints:  # bench_convert's READ_WEIGHTS, once per file
    sys.argv[1:] = [checkpoint]
    exec({READ_WEIGHTS!r})
Path(seconds_to).write_text(repr(time.perf_counter() - started))
"""

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # torch's pool slows the floor's big copies on a busy CPU: both floors count
Sample = tuple[float, float, float, float]  # seconds, peak anon MiB, peak RSS MiB, in-process seconds (or nan)


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB, sha_ni {'present' if has_sha_ni() else 'absent'}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def save_atomically(checkpoint: dict, path: Path) -> None:
    """Write beside ``path`` and rename, so a file under the final name is always complete."""
    partial = path.with_name(path.name + ".partial")
    torch.save(checkpoint, partial)
    partial.rename(path)


def save_epoch(state: dict[str, torch.Tensor], epoch: int, path: Path, *, name: str, seed: int) -> None:
    """Save ``state`` as epoch ``epoch`` of run ``name``, as cn_clip's training writes it: with AdamW moments drawn
    from ``seed`` (per epoch, so every file's optimizer state differs)."""
    log(f"building {path} …")
    checkpoint = {"epoch": epoch, "step": 1000 * epoch, "name": name, "state_dict": state}
    checkpoint["optimizer"] = adamw_state(state, torch.Generator().manual_seed(seed), 1000 * epoch)
    save_atomically(checkpoint, path)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)["state_dict"]


def reference_checkpoint(cache: Path) -> Path:
    path = cache / REFERENCE
    if not path.exists():
        log(f"building {path} …")
        build_checkpoint(path, VIT_B_16, fp16=False, optimizer=False)
    return path


def moved_checkpoint(cache: Path, reference: Path) -> Path:
    """B: every tensor of A moved by 1e-3·noise, with AdamW state."""
    path = cache / MOVED
    if not path.exists():
        log(f"building {path} …")
        generator = torch.Generator().manual_seed(1)
        state = {k: v + 1e-3 * torch.randn(v.shape, generator=generator) for k, v in load_state(reference).items()}
        optimizer = adamw_state(state, generator, step=5000)
        save_atomically({"epoch": 5, "step": 5000, "name": "moved", "state_dict": state, "optimizer": optimizer}, path)
    return path


def median_sample(samples: list[Sample]) -> Sample:
    return tuple(statistics.median(s[i] for s in samples) for i in range(4))  # type: ignore[return-value]


def run_turns(commands: dict[str, Callable[[], Sample]], runs: int) -> dict[str, Sample]:
    """One warm-up of each, then ``runs`` rounds in which the commands take turns; medians."""
    for name, run in commands.items():
        log(f"  warm-up: {name}")
        run()
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    for round_ in range(runs):
        for name, run in commands.items():
            samples[name].append(run())
            seconds, anon, rss, inner = samples[name][-1]
            log(f"  run {round_ + 1}: {name}: {seconds:.2f} s (in-process {inner:.2f} s), "
                f"anon {anon:.0f} MiB, RSS {rss:.0f} MiB")  # fmt: skip
    return {name: median_sample(found) for name, found in samples.items()}


def timed(command: list[str], seconds_file: Path | None = None, env: dict | None = None) -> Callable[[], Sample]:
    """A fresh-process run of ``command``; its in-process seconds are read from ``seconds_file`` if given."""

    def run() -> Sample:
        seconds, anon, rss = measure(command, env)
        inner = float(seconds_file.read_text()) if seconds_file else float("nan")
        return seconds, anon, rss, inner

    return run


def bench_diff(cache: Path, runs: int) -> list[str]:
    reference = reference_checkpoint(cache)
    moved = moved_checkpoint(cache, reference)
    python, a, b = sys.executable, str(reference), str(moved)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        floor_file, diff_file = Path(work) / "floor", Path(work) / "diff"
        results = run_turns(
            {
                "floor": timed([python, "-c", READ_BOTH, a, b, str(floor_file)], floor_file),
                "floor, one thread": timed([python, "-c", READ_BOTH, a, b, str(floor_file)], floor_file, ONE_THREAD),
                "cli": timed([python, "-m", "chclip_convert", "diff", a, b]),
                "in-process": timed([python, "-c", DIFF_IN_PROCESS, a, b, str(diff_file)], diff_file),
            },
            runs,
        )
    return diff_table(results)


def diff_table(results: dict[str, Sample]) -> list[str]:
    cli, inner, floors = results["cli"], results["in-process"], (results["floor"], results["floor, one thread"])
    whole, in_process = min(f[0] for f in floors), min(f[3] for f in floors)  # the faster floor of the two
    rows = [
        *((f"read both files' weights (floor{label}), whole process", f[0], f, f[0] / whole, "", "")
          for label, f in zip(("", ", one thread"), floors, strict=True)),
        *((f"read both files' weights (floor{label}), in-process", f[3], f, f[3] / in_process, "", "")
          for label, f in zip(("", ", one thread"), floors, strict=True)),
        ("`chclip-convert diff A B`, whole process", cli[0], cli, cli[0] / whole, *verdict(cli[0] / whole, cli)),
        ("`diff_checkpoints(A, B)`, in-process", inner[3], inner, inner[3] / in_process,
         *verdict(inner[3] / in_process, inner)),
    ]  # fmt: skip
    lines = [
        "| what | seconds | peak anon MiB | peak RSS MiB | ratio to the floor | target | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for what, seconds, sample, ratio, target, result in rows:
        lines.append(
            f"| {what} | {seconds:.2f} | {sample[1]:.0f} | {sample[2]:.0f} | {ratio:.2f}× | {target} | {result} |"
        )
    lines.append(
        "\n(ratios are to the faster floor; the in-process rows' memory is their whole process's; in-process "
        "seconds exclude imports)"
    )
    return lines


def verdict(ratio: float, sample: Sample) -> tuple[str, str]:
    missed = [what for what, bad in (("time", ratio > TIME_TARGET), ("memory", sample[1] > ANON_TARGET_MIB)) if bad]
    return (
        f"≤ {TIME_TARGET:g}× floor, anon ≤ {ANON_TARGET_MIB} MiB",
        f"MISSED ({', '.join(missed)})" if missed else "ok",
    )


def move_epoch(state: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
    """The next epoch's weights: every tensor moved, the last text layers and the projections five times more."""
    generator = torch.Generator().manual_seed(1000 + epoch)
    return {
        key: value
        + (5e-4 if key.removeprefix("module.").startswith(FAST_MOVERS) else 1e-4)
        * torch.randn(value.shape, generator=generator)
        for key, value in state.items()
    }


def epoch_paths(cache: Path) -> list[Path]:
    return [cache / RUN_FOLDER / "checkpoints" / f"epoch{n}.pt" for n in range(1, EPOCHS + 1)]


def build_run(cache: Path, reference: Path) -> list[Path]:
    """Epochs 1..10, reusing the complete ones already there; refuses if the disk is too full for the rest."""
    paths = epoch_paths(cache)
    missing = [path for path in paths if not path.exists()]
    if not missing:
        return paths
    needed, free = len(missing) * EPOCH_BYTES + SPARE_BYTES, shutil.disk_usage(cache).free
    if free < needed:
        raise SystemExit(
            f"drift needs {len(missing)} more epoch files of ~{EPOCH_BYTES / 1e9:.1f} GB in {paths[0].parent}: "
            f"{needed / 1e9:.0f} GB free are required, {free / 1e9:.0f} GB are. Free some space or run --only diff."
        )
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    first = paths.index(missing[0])
    state = load_state(paths[first - 1] if first else reference)
    for epoch, path in enumerate(paths[first:], first + 1):
        state = move_epoch(state, epoch)
        if not path.exists():
            save_epoch(state, epoch, path, name=RUN_FOLDER, seed=2000 + epoch)
    return paths


def bench_drift(cache: Path, runs: int, keep: bool) -> list[str]:
    reference = reference_checkpoint(cache)
    try:
        paths = build_run(cache, reference)
        drift = [sys.executable, "-m", "chclip_convert", "drift", "--reference", str(reference)]
        commands = {count: timed([*drift, *map(str, paths[:count])]) for count in EPOCH_COUNTS}
        results = run_turns({f"{count} epochs": run for count, run in reversed(commands.items())}, runs)
    finally:
        if not keep:
            shutil.rmtree(cache / RUN_FOLDER, ignore_errors=True)
            log(f"deleted {cache / RUN_FOLDER}")
    return drift_table({count: results[f"{count} epochs"] for count in EPOCH_COUNTS})


def drift_table(results: dict[int, Sample]) -> list[str]:
    lines = [
        "| epochs | seconds | seconds per epoch | peak anon MiB | peak RSS MiB |",
        "|---|---|---|---|---|",
    ]
    for count, (seconds, anon, rss, _) in results.items():
        lines.append(f"| {count} | {seconds:.2f} | {seconds / count:.2f} | {anon:.0f} | {rss:.0f} |")
    (few, few_s), (many, many_s) = [(n, results[n]) for n in (EPOCH_COUNTS[0], EPOCH_COUNTS[-1])]
    # Peak anon is sampled every 10 ms and includes the allocator's cached blocks and each file's unpickled
    # metadata (a few MiB per epoch), so it wobbles by tens of MiB; anything held per epoch that matters —
    # even one 32 MiB float64 chunk per epoch — would add ≥ 256 MiB over the 8 extra epochs and break this.
    limit = few_s[1] * 1.10 + 50
    flat = "flat" if many_s[1] <= limit else "NOT FLAT"
    lines.append(
        f"\n{many}-epoch peak anon {many_s[1]:.0f} MiB vs {few}-epoch {few_s[1]:.0f} MiB "
        f"(tolerance: ≤ {few}-epoch × 1.10 + 50 = {limit:.0f} MiB): **{flat}**; "
        f"each epoch beyond {few} adds {(many_s[0] - few_s[0]) / (many - few):.2f} s"
    )
    return lines


def run_sections(description: str, keep_help: str, sections: dict[str, tuple[str, Callable[..., list[str]]]]) -> None:
    """The benchmarks' command line: ``--runs``, ``--cache``, ``--only NAME`` and ``--keep``; then each section
    (name → its title and ``bench(cache, runs, keep)``) run in turn and printed as Markdown under the machine."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chclip-convert-bench")
    parser.add_argument("--only", choices=tuple(sections))
    parser.add_argument("--keep", action="store_true", help=keep_help)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    line = machine()
    log(line)
    results = [(title, bench(args.cache, args.runs, args.keep))
               for name, (title, bench) in sections.items() if args.only in (None, name)]  # fmt: skip
    print(f"\n{line}\nmedian of {args.runs} runs after a warm-up run of each command (page cache warm)")
    for title, lines in results:
        print(f"\n### {title}\n")
        print("\n".join(lines))


def main() -> None:
    run_sections(__doc__.split("\n")[0], "keep drift's 23 GB of epoch files in the cache", {
        "diff": ("diff of two ViT-B-16 fp32 checkpoints (B with AdamW state)",
                 lambda cache, runs, keep: bench_diff(cache, runs)),
        "drift": ("drift over ViT-B-16 fp32 epochs with AdamW state", bench_drift),
    })  # fmt: skip


if __name__ == "__main__":
    main()

"""Each notebook run headless on a full-size ViT-B-16 fp32 checkpoint, against the targets.

    .venv/bin/python benchmarks/bench_notebooks.py [--cache DIR]

The checkpoint (seeded, built by ``bench_convert.build_checkpoint`` and cached in --cache, default
~/.cache/chclip-convert-bench) is given to the notebooks as ``CHCLIP_CHECKPOINT``; ``CHCLIP_WORK`` is a fresh
temporary folder, so 01 converts into it and 02–04 use that folder. Each notebook runs as
``jupyter nbconvert --to notebook --execute --output-dir TMP`` (never in place), in order 01 → 04, after a floor
notebook that only imports torch, transformers and the package, measured the same way in the same run.

Targets: 01 ≤ floor + 15 s, 02 ≤ floor + 5 s, 03 ≤ floor + 8 s and the kernel's peak anonymous memory
≤ 1.5 GiB, 04 ≤ floor + 20 s and ≤ 2.5 GiB; nothing over 1 MB written inside the checkout; 03's histogram
shows another tensor in under a second. Prints a markdown
table and exits 1 when a target is missed. Times on a shared machine are noisy: run it with nothing else busy.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
from bench_convert import CHECKPOINTS, build_checkpoint, cpu_model, has_sha_ni, peak_memory  # beside this script

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHECKPOINT_NAME = "vit-b-16-fp32"
FLOOR = "floor (imports only)"
FLOOR_SOURCE = "import torch\nimport transformers\nimport chclip_convert"
# notebook → (seconds beyond the floor, peak anonymous GiB or None)
TARGETS = {
    "01_convert.ipynb": (15.0, None),
    "02_inspect_keys.ipynb": (5.0, None),
    "03_weight_stats.ipynb": (8.0, 1.5),
    "04_verify_and_save.ipynb": (20.0, 2.5),
}
LARGE_BYTES = 1 << 20  # nothing larger may be written inside the checkout
SKIPPED_DIRS = (".git", ".venv")  # .venv, .venv-core, … and git's own files
SAMPLE_SECONDS = 0.05
CELL_TIMEOUT = 900


@dataclass
class Run:
    name: str
    seconds: float
    peak_anon_gib: float
    cpu_seconds: float  # the kernel's own, which other jobs on the machine do not inflate as they do wall time
    error: str = ""


def cpu_seconds(pid: int) -> float | None:
    """User and system CPU time of ``pid`` so far, ``None`` once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_kernel(root_pid: int) -> int | None:
    """The ipykernel process among the descendants of ``root_pid`` (nbconvert starts it)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    for pid, command in commands.items():
        ancestor = parents.get(pid)
        while ancestor is not None and ancestor != root_pid:
            ancestor = parents.get(ancestor)
        if ancestor == root_pid and b"ipykernel" in command:
            return pid
    return None


def run_notebook(notebook: Path, output_dir: Path, env: dict[str, str]) -> Run:
    """Execute ``notebook`` with nbconvert into ``output_dir``; wall time and the kernel's peak RssAnon."""
    command = [
        sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
        f"--ExecutePreprocessor.timeout={CELL_TIMEOUT}", "--output-dir", str(output_dir), str(notebook),
    ]  # fmt: skip
    os.sync()  # the previous notebook's writes reach the disk now, not during this run
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=notebook.parent, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        kernel, peak, cpu = None, 0, 0.0
        while process.poll() is None:
            kernel = kernel or find_kernel(process.pid)
            if kernel is not None:
                # RssAnon, sampled: VmHWM (read once at the end) would count the memory-mapped checkpoint's and
                # safetensors' file pages, which the kernel can drop, and it is gone once the kernel has exited.
                peak = max(peak, peak_memory(kernel)[0])
                cpu = cpu_seconds(kernel) or cpu
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - started
        errors.seek(0)
        failure = "" if process.returncode == 0 else _last_lines(errors.read().decode(errors="replace"))
    return Run(notebook.name if notebook.parent == NOTEBOOKS else FLOOR, seconds, peak / 2**20, cpu, failure)


def _last_lines(text: str, count: int = 6) -> str:
    """The end of a traceback, without its colours."""
    return "\n".join(re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()[-count:])


def large_writes(since: float) -> list[tuple[Path, int]]:
    """Files over 1 MB created or modified inside the checkout since ``since`` (outside .git and .venv*)."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if not name.startswith(SKIPPED_DIRS)]
        for name in files:
            path = Path(folder) / name
            try:
                info = path.stat()
            except OSError:
                continue
            if info.st_size > LARGE_BYTES and max(info.st_mtime, info.st_ctime) >= since:
                found.append((path.relative_to(ROOT), info.st_size))
    return found


def checkpoint(cache: Path) -> Path:
    """The cached full-size checkpoint, built on first use."""
    path = cache / f"{CHECKPOINT_NAME}.pt"
    if not path.exists():
        print(f"building {path} …", file=sys.stderr, flush=True)
        cache.mkdir(parents=True, exist_ok=True)
        build_checkpoint(path, *CHECKPOINTS[CHECKPOINT_NAME])
    return path


def verdict(run: Run, floor: float) -> tuple[str, str, str, bool]:
    """(time target, memory target, verdict, met) of one notebook's run."""
    if run.name not in TARGETS:
        return "-", "-", "floor", not run.error
    extra, memory = TARGETS[run.name]
    met_time = run.seconds - floor <= extra
    met_memory = memory is None or run.peak_anon_gib <= memory
    misses = [what for what, met in (("time", met_time), ("memory", met_memory)) if not met]
    text = "FAILED to run" if run.error else ("missed: " + ", ".join(misses) if misses else "ok")
    memory_target = f"≤ {memory} GiB" if memory is not None else "-"
    return f"≤ floor + {extra:.0f} s", memory_target, text, not run.error and not misses


def print_table(runs: list[Run]) -> bool:
    """The markdown table; whether every target was met."""
    floor = runs[0].seconds
    print("| notebook | seconds | beyond floor | target | peak anon GiB | target | verdict |")
    print("|---|---|---|---|---|---|---|")
    all_met = True
    for run in runs:
        time_target, memory_target, text, met = verdict(run, floor)
        all_met = all_met and met
        beyond = f"{run.seconds - floor:+.1f}" if run.name in TARGETS else "-"
        print(f"| {run.name} | {run.seconds:.1f} | {beyond} | {time_target} | {run.peak_anon_gib:.2f} | "
              f"{memory_target} | {text} |")  # fmt: skip
    return all_met


HISTOGRAM_TARGET = 1.0  # seconds for 03's histogram to show another tensor
HISTOGRAM_TENSORS = (  # the largest tensor, a q slice of a fused weight, a layer norm
    "text_model.embeddings.word_embeddings.weight",
    "vision_model.encoder.layers.5.self_attn.q_proj.weight",
    "text_model.encoder.layer.11.output.LayerNorm.weight",
)


def histogram_seconds(source: Path, work: Path) -> dict[str, float]:
    """Seconds for notebook 03's histogram widget to show each of HISTOGRAM_TENSORS, on the folder 01 wrote
    (the same widget, driven in this process: each change reads that tensor from both sides and draws it)."""
    from chclip_convert.notebook.histogram import HistogramUI
    from chclip_convert.notebook.workspace import Workspace

    ui = HistogramUI(source, Workspace(work).converted_folder(source), initial=HISTOGRAM_TENSORS[-1])
    seconds = {}
    for name in HISTOGRAM_TENSORS:
        started = time.perf_counter()
        ui.tensor.value = name
        seconds[name] = time.perf_counter() - started
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chclip-convert-bench")
    args = parser.parse_args()
    sha_ni = "present" if has_sha_ni() else "absent"
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores, sha_ni {sha_ni}; load average {os.getloadavg()[0]:.2f}")
    source = checkpoint(args.cache)
    with tempfile.TemporaryDirectory(prefix="chclip-bench-notebooks-") as temporary:
        temporary = Path(temporary)
        work, outputs = temporary / "work", temporary / "executed"
        work.mkdir()
        outputs.mkdir()
        floor = temporary / "floor.ipynb"
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FLOOR_SOURCE)])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, floor)
        env = {
            **os.environ,
            "CHCLIP_CHECKPOINT": str(source),
            "CHCLIP_WORK": str(work),
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        with open(source, "rb") as stream:  # page cache warm, as after the conversion a user just ran
            while stream.read(64 << 20):
                pass
        started = time.time()
        runs = []
        for path in [floor, *(NOTEBOOKS / name for name in TARGETS)]:
            runs.append(run_notebook(path, outputs, env))
            run = runs[-1]
            line = (
                f"  {run.name}: {run.seconds:.1f} s (kernel CPU {run.cpu_seconds:.1f} s), "
                f"peak anon {run.peak_anon_gib:.2f} GiB, load average {os.getloadavg()[0]:.1f}"
            )
            print(line, file=sys.stderr, flush=True)
        written = large_writes(started)
        histogram = histogram_seconds(source, work)
    print()
    all_met = print_table(runs)
    print()
    for name, seconds in histogram.items():
        print(f"03's histogram, {name}: {seconds:.2f} s (target < {HISTOGRAM_TARGET:.0f} s)")
    all_met = all_met and max(histogram.values()) < HISTOGRAM_TARGET
    for run in runs:
        if run.error:
            print(f"\n{run.name} failed:\n{run.error}")
    print()
    if written:
        print("Written inside the checkout (files over 1 MB, by folder): target missed")
        folders: dict[Path, list[int]] = {}
        for path, size in written:
            folders.setdefault(path.parent, []).append(size)
        for folder, sizes in sorted(folders.items()):
            print(f"  {folder}/: {len(sizes)} file(s), {sum(sizes) / 1e6:.1f} MB")
    else:
        print("Nothing over 1 MB written inside the checkout: ok")
    return 0 if all_met and not written else 1


if __name__ == "__main__":
    sys.exit(main())

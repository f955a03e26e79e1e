"""Wall time and peak memory of converting full-size checkpoints, beside the bounds that matter.

    .venv/bin/python benchmarks/bench_convert.py [--runs 3] [--cache DIR] [--only NAME ...]

Checkpoints (seeded, cached in --cache, default ~/.cache/chclip-convert-bench) are full size, in cn_clip's
layout, with random weights generated from the mapping table's own names and shapes:

- ``vit-b-16-fp32``: ViT-B-16 training dict, fp32 (as released);
- ``vit-h-14-fp16``: ViT-H-14 training dict with cn_clip's --precision fp16 mix (fp16 weights, fp32 vision
  LayerNorms, class/position embeddings and logit scale);
- ``vit-h-14-fp16-adamw``: the same with AdamW state, fp32 ``exp_avg`` and ``exp_avg_sq`` per parameter
  as training saves it (9.6 GB, of which 1.9 GB are weights).

Methods: the old approach (load everything, random-init fp32 model, copy, ``save_pretrained``); chclip-convert
as it runs by default (its model check recorded by the warm-up run), with the check made each time as on the
first conversion of these shapes under a transformers release, with ``--sha256`` and, on a CPU with SHA
instructions, with ``--sha256`` while OpenSSL is told to ignore them (``OPENSSL_ia32cap``), as on a CPU
without; ``cp`` of the file; and the floor: a process that opens the checkpoint and reads every model tensor's
bytes, nothing else.

Each measurement runs in a fresh process, whose ``RssAnon`` and ``VmRSS`` (/proc/PID/status) are sampled
every 10 ms: peak anonymous memory is the process's own; peak RSS also counts the file pages a memory map
touched, which the kernel can drop at any time. Each run writes into a fresh folder and starts after ``sync``,
so that no run pays for the previous one's writes. One warm-up run, then --runs runs; medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from chclip_convert.conversion.demo import source_shapes
from chclip_convert.export.latency import cpu_model
from chclip_convert.mapping.architecture import Architecture
from chclip_convert.mapping.precision import in_fp16_layout

ROOT = Path(__file__).resolve().parents[1]

VIT_B_16 = Architecture(12, 768, 3072, 12, 16, 224, 12, 768, 3072, 12, 21128, 512, 2, 512)
VIT_H_14 = Architecture(32, 1280, 5120, 16, 14, 224, 24, 1024, 4096, 16, 21128, 512, 2, 1024)
CHECKPOINTS = {
    "vit-b-16-fp32": (VIT_B_16, False, False),
    "vit-h-14-fp16": (VIT_H_14, True, False),
    "vit-h-14-fp16-adamw": (VIT_H_14, True, True),
}


def build_checkpoint(path: Path, arch: Architecture, fp16: bool, optimizer: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in source_shapes(arch, arch.vocab_size).items():
        dtype = torch.float16 if fp16 and in_fp16_layout(name) else torch.float32  # cn_clip's fp16 layout
        state[f"module.{name}"] = (0.02 * torch.randn(shape, generator=generator)).to(dtype)
    checkpoint = {"epoch": 5, "step": 5000, "name": path.stem, "state_dict": state}
    if optimizer:
        checkpoint["optimizer"] = adamw_state(state, generator, step=5000)
    torch.save(checkpoint, path)


def adamw_state(state: dict[str, torch.Tensor], generator: torch.Generator, step: int) -> dict:
    """An AdamW ``state_dict()`` for ``state``'s tensors as training saves it: fp32 moments per parameter."""
    moments = {
        index: {
            "step": torch.tensor(float(step)),
            "exp_avg": torch.randn(t.shape, generator=generator),  # AdamW keeps fp32 moments
            "exp_avg_sq": torch.rand(t.shape, generator=generator),
        }
        for index, t in enumerate(state.values())
    }
    return {"state": moments, "param_groups": [{"lr": 1e-5, "params": list(moments)}]}


OLD_APPROACH = r"""
import sys, torch
from transformers import ChineseCLIPModel
from chclip_convert.mapping.architecture import infer_architecture
from chclip_convert.conversion.state_dict import map_tensors
from chclip_convert.mapping.architecture import expected_shapes

checkpoint, output = sys.argv[1], sys.argv[2]
loaded = torch.load(checkpoint, map_location="cpu")  # everything, optimizer included
state = {k.removeprefix("module."): v for k, v in loaded["state_dict"].items()}
config = infer_architecture(state).to_config()  # the old script needed this as a hand-made config.json
model = ChineseCLIPModel(config).eval()  # randomly initialised fp32 model
converted, _ = map_tensors(state, expected_shapes(config))
with torch.no_grad():
    for name, parameter in model.named_parameters():
        parameter.data = converted[name].clone()  # the old script's `.data =` copies
model.save_pretrained(output)
"""


READ_WEIGHTS = r"""
import sys, torch
from chclip_convert.files.checkpoint import load_checkpoint

source = load_checkpoint(sys.argv[1])  # memory-mapped: the optimizer's tensors are never touched
buffer = torch.empty(max(t.nbytes for t in source.state_dict.values()), dtype=torch.uint8)
for tensor in source.state_dict.values():
    flat = tensor.contiguous().reshape(-1).view(torch.uint8)
    buffer[: flat.numel()].copy_(flat)  # every byte of every model tensor, read once
"""

NO_SHA_NI = {"OPENSSL_ia32cap": ":~0x20000000"}  # CPUID.7:EBX bit 29 (SHA extensions) hidden from OpenSSL
SAMPLE_SECONDS = 0.01
FLOOR = "read the weights (floor)"
FIRST_TIME = "chclip-convert, model check made"  # as the first conversion under a transformers release is


def peak_memory(pid: int) -> tuple[int, int]:
    """(RssAnon, VmRSS) of ``pid`` in KiB, (0, 0) once it is gone."""
    values = {"RssAnon": 0, "VmRSS": 0}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, value = line.partition(":")
                if key in values:
                    values[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return values["RssAnon"], values["VmRSS"]


def measure(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """(seconds, peak anonymous MiB, peak RSS MiB) of ``command`` in a fresh process, sampled every 10 ms."""
    os.sync()  # the previous run's written files reach the disk now, not during this run
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        environment = {**os.environ, **(env or {})}
        # Byte code is cached, as in a user's installation: the warm-up run writes it for the package's sources.
        environment.pop("PYTHONDONTWRITEBYTECODE", None)
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=errors)
        anon = rss = 0
        while process.poll() is None:
            now_anon, now_rss = peak_memory(process.pid)
            anon, rss = max(anon, now_anon), max(rss, now_rss)
            time.sleep(SAMPLE_SECONDS)
        seconds = time.perf_counter() - started
        if process.returncode:
            errors.seek(0)
            raise RuntimeError(f"{command[:4]} … exited with {process.returncode}:\n{errors.read().decode()[-2000:]}")
    return seconds, anon / 1024, rss / 1024


def methods(checkpoint: Path, work: Path, sha_ni: bool) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Method name → (command, extra environment)."""
    ours = [sys.executable, "-m", "chclip_convert", str(checkpoint), str(work / "new"), "--overwrite", "--no-progress"]
    found = {
        "old approach": ([sys.executable, "-c", OLD_APPROACH, str(checkpoint), str(work / "old")], {}),
        "chclip-convert": (ours, {}),
        FIRST_TIME: (ours, {"CHCLIP_CACHE": "/dev/null/not-a-folder"}),  # a record that cannot be kept
        "chclip-convert --sha256": ([*ours, "--sha256"], {}),
    }
    if sha_ni:
        found["chclip-convert --sha256, SHA-NI off"] = ([*ours, "--sha256"], NO_SHA_NI)
    found[FLOOR] = ([sys.executable, "-c", READ_WEIGHTS, str(checkpoint)], {})
    found["cp the file"] = (["cp", str(checkpoint), str(work / "copy.pt")], {})
    return found


def has_sha_ni() -> bool:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return "sha_ni" in flags.split()


HASH_SPEED = r"""
import hashlib, os, sys, time
from blake3 import blake3
block = os.urandom(64 << 20)
rates = []
for _ in range(5):
    started = time.perf_counter()
    digest = blake3(max_threads=1) if sys.argv[1] == "blake3" else hashlib.new(sys.argv[1])
    for _ in range(4):
        digest.update(block)
    rates.append(4 * len(block) / 1e6 / (time.perf_counter() - started))
print(sorted(rates)[2])
"""


def hash_speed(name: str, env: dict[str, str] | None = None) -> float:
    """MB/s of ``name`` (a ``hashlib`` name, or ``blake3`` on one thread) over 256 MB in memory, median of 5, in
    a fresh process (so OpenSSL reads ``env``)."""
    command = [sys.executable, "-c", HASH_SPEED, name]
    result = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=True)
    return float(result.stdout)


def describe_machine() -> tuple[str, bool]:
    sha_ni = has_sha_ni()
    speeds = f"SHA-256 {hash_speed('sha256'):.0f} MB/s"
    if sha_ni:
        speeds += f" ({hash_speed('sha256', NO_SHA_NI):.0f} MB/s with SHA-NI hidden from OpenSSL)"
    speeds += f", BLAKE3 on one thread (the weights digest) {hash_speed('blake3'):.0f} MB/s"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    text = (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB, sha_ni {'present' if sha_ni else 'absent'}; "
        f"{speeds}; torch {torch.__version__}, Python {platform.python_version()}"
    )
    return text, sha_ni


def into_fresh(work: Path) -> None:
    """Remove what the previous run wrote into ``work``, so that each run writes into a new folder or file, as
    a user converting a checkpoint does (replacing an output costs more on ext4: it writes the new data out)."""
    for written in work.iterdir():
        shutil.rmtree(written) if written.is_dir() else written.unlink()


def run_checkpoint(name: str, path: Path, runs: int, cache: Path, sha_ni: bool) -> list[tuple]:
    """Rows (checkpoint, size GiB, method, seconds, peak anon MiB, peak RSS MiB) for one checkpoint."""
    rows = []
    size = path.stat().st_size / 2**30
    work = Path(tempfile.mkdtemp(dir=cache))
    try:
        for method, (command, env) in methods(path, work, sha_ni).items():
            into_fresh(work)
            measure(command, env)  # warm-up: page cache, imports
            results = []
            for _ in range(runs):
                into_fresh(work)
                results.append(measure(command, env))
            seconds, anon, rss = (statistics.median(r[i] for r in results) for i in range(3))
            rows.append((name, size, method, seconds, anon, rss))
            spread = "/".join(f"{r[0]:.1f}" for r in results)
            print(f"  {name} {method}: {seconds:.1f} s ({spread}), anon {anon:.0f} MiB, RSS {rss:.0f} MiB",
                  file=sys.stderr, flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def print_table(rows: list[tuple]) -> None:
    """The table: each method's median beside the floor's and the old approach's (targets: ours ≤ 2.0× the
    floor, ≤ 0.25× the old approach)."""
    print("| checkpoint | GiB | method | time s | peak anon MiB | peak RSS MiB | time / floor | time / old |")
    print("|---|---|---|---|---|---|---|---|")
    times = {(row[0], row[2]): row[3] for row in rows}
    for name, size, method, seconds, anon, rss in rows:
        floor, old = times[(name, FLOOR)], times[(name, "old approach")]
        print(f"| {name} | {size:.2f} | {method} | {seconds:.1f} | {anon:.0f} | {rss:.0f} | "
              f"{seconds / floor:.2f}× | {seconds / old:.2f}× |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chclip-convert-bench")
    parser.add_argument("--only", nargs="*", choices=list(CHECKPOINTS), default=list(CHECKPOINTS))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    machine, sha_ni = describe_machine()
    print(machine, file=sys.stderr, flush=True)
    rows = []
    for name in args.only:
        path = args.cache / f"{name}.pt"
        if not path.exists():
            print(f"building {path} …", file=sys.stderr, flush=True)
            build_checkpoint(path, *CHECKPOINTS[name])
        rows += run_checkpoint(name, path, args.runs, args.cache, sha_ni)
    print(f"\n{machine}\nmedian of {args.runs} runs after a warm-up\n")
    print_table(rows)


if __name__ == "__main__":
    main()

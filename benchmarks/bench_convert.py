"""Wall time and peak memory of converting full-size checkpoints: chclip-convert, the old approach, and
copying the file (the disk's bound).

    .venv/bin/python benchmarks/bench_convert.py [--runs 3] [--cache DIR] [--only NAME ...]

Checkpoints (seeded, cached in --cache, default ~/.cache/chclip-convert-bench) are full size, in cn_clip's
layout, with random weights generated from the mapping table's own names and shapes:

- ``vit-b-16-fp32``: ViT-B-16 training dict, fp32 (as released);
- ``vit-h-14-fp16``: ViT-H-14 training dict with cn_clip's --precision fp16 mix (fp16 weights, fp32 vision
  LayerNorms, class/position embeddings and logit scale);
- ``vit-h-14-fp16-train``: the same with Adam state (exp_avg, exp_avg_sq per parameter, as training saves).

Each measurement runs in a fresh process; peak memory is that process's peak resident set (ru_maxrss).
One warm-up run, then --runs runs; the table gives medians and ratios to chclip-convert.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from chclip_convert.architecture import Architecture
from chclip_convert.demo import source_shapes

ROOT = Path(__file__).resolve().parents[1]

VIT_B_16 = Architecture(12, 768, 3072, 12, 16, 224, 12, 768, 3072, 12, 21128, 512, 2, 512)
VIT_H_14 = Architecture(32, 1280, 5120, 16, 14, 224, 24, 1024, 4096, 16, 21128, 512, 2, 1024)
CHECKPOINTS = {
    "vit-b-16-fp32": (VIT_B_16, False, False),
    "vit-h-14-fp16": (VIT_H_14, True, False),
    "vit-h-14-fp16-adamw": (VIT_H_14, True, True),
}
FP32_UNDER_FP16 = ("visual.ln_", "visual.class_embedding", "visual.positional_embedding", "logit_scale")


def keeps_fp32(name: str) -> bool:
    """What cn_clip's convert_weights leaves in fp32: vision LayerNorms, class/position embeddings, logit scale."""
    return name.startswith(FP32_UNDER_FP16) or (".ln_" in name and name.startswith("visual."))


def build_checkpoint(path: Path, arch: Architecture, fp16: bool, optimizer: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in source_shapes(arch, arch.vocab_size).items():
        dtype = torch.float16 if fp16 and not keeps_fp32(name) else torch.float32
        state[f"module.{name}"] = (0.02 * torch.randn(shape, generator=generator)).to(dtype)
    checkpoint = {"epoch": 5, "step": 5000, "name": path.stem, "state_dict": state}
    if optimizer:
        moments = {
            index: {
                "step": torch.tensor(5000.0),
                "exp_avg": torch.randn(t.shape, generator=generator),  # AdamW keeps fp32 moments
                "exp_avg_sq": torch.rand(t.shape, generator=generator),
            }
            for index, t in enumerate(state.values())
        }
        checkpoint["optimizer"] = {"state": moments, "param_groups": [{"lr": 1e-5, "params": list(moments)}]}
    torch.save(checkpoint, path)


OLD_APPROACH = r"""
import sys, torch
from transformers import ChineseCLIPModel
from chclip_convert.architecture import infer_architecture
from chclip_convert.convert import map_tensors
from chclip_convert.architecture import expected_shapes

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


def measure(command: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of ``command`` run in a fresh child process."""
    probe = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(json.dumps([time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))"
    )
    out = subprocess.run([sys.executable, "-c", probe, *command], check=True, capture_output=True, text=True).stdout
    seconds, max_rss_kib = json.loads(out.strip().splitlines()[-1])
    return seconds, max_rss_kib / 2**20


def commands(checkpoint: Path, work: Path) -> dict[str, list[str]]:
    return {
        "chclip-convert": [sys.executable, "-m", "chclip_convert", str(checkpoint), str(work / "new"), "--overwrite",
                           "--no-progress"],
        "old approach": [sys.executable, "-c", OLD_APPROACH, str(checkpoint), str(work / "old")],
        "copy file": ["cp", str(checkpoint), str(work / "copy.pt")],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chclip-convert-bench")
    parser.add_argument("--only", nargs="*", choices=list(CHECKPOINTS), default=list(CHECKPOINTS))
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    env_note = f"torch {torch.__version__}, {os.cpu_count()} cores"
    rows = []
    for name in args.only:
        path = args.cache / f"{name}.pt"
        if not path.exists():
            print(f"building {path} …", file=sys.stderr, flush=True)
            build_checkpoint(path, *CHECKPOINTS[name])
        size = path.stat().st_size / 2**30
        for method, command in commands(path, Path(tempfile.mkdtemp(dir=args.cache))).items():
            measure(command)  # warm-up: page cache, imports
            results = [measure(command) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            peak = statistics.median(r[1] for r in results)
            rows.append((name, size, method, seconds, peak))
            print(f"  {name} {method}: {seconds:.1f} s, {peak:.2f} GiB", file=sys.stderr, flush=True)
        shutil.rmtree(Path(command[-1]).parent, ignore_errors=True)
    print(f"\n{env_note}; median of {args.runs} runs after a warm-up\n")
    print("| checkpoint | size GiB | method | time s | peak RSS GiB | time / ours | memory / ours |")
    print("|---|---|---|---|---|---|---|")
    ours = {name: (s, p) for name, _, method, s, p in rows if method == "chclip-convert"}
    for name, size, method, seconds, peak in rows:
        ratio_t, ratio_m = seconds / ours[name][0], peak / ours[name][1]
        print(f"| {name} | {size:.2f} | {method} | {seconds:.1f} | {peak:.2f} | {ratio_t:.2f}× | {ratio_m:.2f}× |")


if __name__ == "__main__":
    main()

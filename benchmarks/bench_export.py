"""ONNX export of a full-size ViT-B-16: export time and memory, and onnxruntime's latency beside PyTorch's.

    .venv/bin/python benchmarks/bench_export.py [--runs 1] [--repeats 20] [--cache DIR] [--vit-h]

The checkpoint is cn_clip's own ViT-B-16 with seeded weights (cn_clip's initialisation, as the tests build
them), saved as training saves it and converted once; both are cached in --cache (default
~/.cache/chclip-convert-bench). Needs cn_clip and the export extra.

- Export: ``chclip-convert export-onnx FOLDER OUT`` in a fresh process, float32 only and with every variant
  (``--dtype float16 --quantize``), its time and peak anonymous memory (``RssAnon``, sampled every 10 ms as
  bench_convert.py does), beside the float32 weights' size. Each includes onnxruntime's checks.
- Latency: image and text embeddings at batch 1 and 8, PyTorch (``get_image_features`` /
  ``get_text_features``, float32, ``torch.no_grad``) against onnxruntime on ``vision_model.onnx`` /
  ``text_model.onnx`` and their ``_quantized`` files; median of --repeats calls after two warm-ups, both on
  every core. Text is 52 tokens, as cn_clip pads.
- int8 accuracy: the least cosine of int8 image features with float32's (onnxruntime), over the batch of 8.
- ``--vit-h``: a full-size ViT-H-14 exported once too, float32: its weights (3.8 GB) pass protobuf's 2 GB
  cap, so each file keeps them beside it in ``*.onnx_data``.
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
from pathlib import Path

import numpy as np
import torch
from bench_convert import cpu_model, has_sha_ni, measure

from chclip_convert.export.latency import PYTORCH, TOWERS, batch_inputs, measure_latency, runtime_name
from chclip_convert.export.runtime import open_session, run_session
from chclip_convert.export.writer import FP32, INT8
from chclip_convert.verification.model_outputs import folder_processor, original_architecture, write_seeded_original

EXPORTS = (  # (row label, export-onnx options)
    ("ViT-B-16 export, float32 (3 files, checked)", []),
    ("ViT-B-16 export, + fp16 + int8 (9 files)", ["--dtype", "float16", "--quantize"]),
)
VIT_H_EXPORT = (("ViT-H-14 export, float32 (external data)", []),)


def prepare(cache: Path, name: str = "ViT-B-16") -> tuple[Path, Path]:
    """The seeded checkpoint of cn_clip's model ``name`` and its converted folder, built once into ``cache``."""
    checkpoint, folder = cache / f"{name.lower()}-seeded.pt", cache / f"{name.lower()}-seeded-hf"
    if not checkpoint.exists():
        print(f"building {checkpoint} …", file=sys.stderr, flush=True)
        write_seeded_original(original_architecture(name), checkpoint, seed=0)
    if not (folder / "config.json").exists():
        command = [sys.executable, "-m", "chclip_convert", "convert", str(checkpoint), str(folder), "--overwrite"]
        subprocess.run([*command, "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    return checkpoint, folder


def export_rows(folder: Path, runs: int, kinds: tuple = EXPORTS) -> tuple[list[tuple], Path]:
    """Rows (what, seconds, peak anon MiB, anon / fp32 weights) and the folder the last export wrote."""
    weights = sum(file.stat().st_size for file in folder.glob("*.safetensors")) / 2**20
    out = Path(tempfile.mkdtemp(prefix="bench-export-")) / "onnx"
    base = [
        sys.executable,
        "-m",
        "chclip_convert",
        "export-onnx",
        str(folder),
        str(out),
        "--overwrite",
        "--no-progress",
    ]
    rows = []
    for what, extra in kinds:
        results = [measure([*base, *extra]) for _ in range(runs)]
        seconds, anon = statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)
        rows.append((what, seconds, anon, anon / weights))
        print(f"  {what}: {seconds:.1f} s, anon {anon:.0f} MiB ({anon / weights:.2f}× weights)", file=sys.stderr)
    return rows, out


def latency_rows(folder: Path, onnx_dir: Path, repeats: int) -> tuple[list[tuple], float]:
    """Rows (tower, batch, PyTorch ms, onnxruntime fp32 ms, int8 ms) and the int8 image-feature cosine."""
    figures = measure_latency(folder, onnx_dir, batches=(1, 8), repeats=repeats)
    ms = {(f.tower, f.batch, f.runtime): f.milliseconds for f in figures}
    runtimes = (PYTORCH, runtime_name(FP32), runtime_name(INT8))
    rows = [(tower, batch, *(ms[tower, batch, r] for r in runtimes)) for batch in (1, 8) for tower in TOWERS]
    processor = folder_processor(folder)
    graph, cosine = TOWERS["image"], 1.0
    sessions = [open_session(onnx_dir / graph.file_name(variant.suffix)) for variant in (FP32, INT8)]
    for batch in (1, 8):
        fp32, int8 = (run_session(s, graph, batch_inputs(processor, batch))["image_embeds"] for s in sessions)
        cosines = (fp32 * int8).sum(-1) / (np.linalg.norm(fp32, axis=-1) * np.linalg.norm(int8, axis=-1))
        cosine = min(cosine, float(cosines.min()))
    return rows, cosine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="fresh-process exports of each kind (median)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per latency figure (median)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "chclip-convert-bench")
    parser.add_argument("--vit-h", action="store_true", help="also export a full-size ViT-H-14 (3.8 GB), once")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    import onnxruntime

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    machine = (
        f"{cpu_model()}, {os.cpu_count()} cores, {memory:.0f} GiB, sha_ni {'present' if has_sha_ni() else 'absent'}; "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}"
    )
    print(machine, file=sys.stderr, flush=True)
    _, folder = prepare(args.cache)
    exports, onnx_dir = export_rows(folder, args.runs)
    try:
        latencies, cosine = latency_rows(folder, onnx_dir, args.repeats)
    finally:
        shutil.rmtree(onnx_dir.parent, ignore_errors=True)
    if args.vit_h:
        rows, onnx_dir = export_rows(prepare(args.cache, "ViT-H-14")[1], 1, VIT_H_EXPORT)
        exports += rows
        shutil.rmtree(onnx_dir.parent, ignore_errors=True)
    print(
        f"\n{machine}\nfull-size, seeded; exports: median of {args.runs}; ViT-B-16 latency: median of {args.repeats}\n"
    )
    print("| export | time s | peak anon MiB | anon / fp32 weights |\n|---|---|---|---|")
    for what, seconds, anon, ratio in exports:
        print(f"| {what} | {seconds:.1f} | {anon:.0f} | {ratio:.2f}× |")
    print("\n| embedding | batch | PyTorch ms | onnxruntime fp32 ms | fp32 / PyTorch | int8 ms | int8 / fp32 |")
    print("|---|---|---|---|---|---|---|")
    for tower, batch, torch_ms, fp32_ms, int8_ms in latencies:
        print(f"| {tower} | {batch} | {torch_ms:.1f} | {fp32_ms:.1f} | {fp32_ms / torch_ms:.2f}× | {int8_ms:.1f} | "
              f"{int8_ms / fp32_ms:.2f}× |")  # fmt: skip
    print(f"\nint8 image features against float32 (onnxruntime), least cosine over batch 1 and 8: {cosine:.5f}")


if __name__ == "__main__":
    main()

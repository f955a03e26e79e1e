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
import time
from pathlib import Path

import numpy as np
import torch
from bench_convert import cpu_model, has_sha_ni, measure

from chclip_convert.verification.model_outputs import (
    SAMPLE_CAPTIONS,
    original_architecture,
    sample_image,
    tokenize_captions,
    write_seeded_original,
)

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


def median_ms(call, repeats: int, *args, **kwargs) -> float:
    """Median milliseconds of ``call(*args, **kwargs)`` over ``repeats`` calls, after two warm-ups."""
    for _ in range(2):
        call(*args, **kwargs)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(*args, **kwargs)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def latency_rows(folder: Path, onnx_dir: Path, repeats: int) -> tuple[list[tuple], float]:
    """Rows (tower, batch, PyTorch ms, onnxruntime fp32 ms, int8 ms) and the int8 image-feature cosine."""
    import onnxruntime
    from transformers import ChineseCLIPModel, ChineseCLIPProcessor

    processor = ChineseCLIPProcessor.from_pretrained(folder, backend="pil")
    model = ChineseCLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    names = ("text_model", "vision_model", "text_model_quantized", "vision_model_quantized")
    sessions = {
        name: onnxruntime.InferenceSession(str(onnx_dir / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for name in names
    }
    rows, cosine = [], 1.0
    for batch in (1, 8):
        pixels, ids, mask = batch_inputs(processor, batch)
        image, text = {"pixel_values": pixels.numpy()}, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        with torch.no_grad():
            torch_image = median_ms(model.get_image_features, repeats, pixel_values=pixels)
            torch_text = median_ms(model.get_text_features, repeats, input_ids=ids, attention_mask=mask)
        onnx_image = [median_ms(sessions[name].run, repeats, None, image) for name in names[1::2]]
        onnx_text = [median_ms(sessions[name].run, repeats, None, text) for name in names[0::2]]
        rows += [("image", batch, torch_image, *onnx_image), ("text", batch, torch_text, *onnx_text)]
        fp32, int8 = (sessions[name].run(None, image)[0] for name in names[1::2])
        cosines = (fp32 * int8).sum(-1) / (np.linalg.norm(fp32, axis=-1) * np.linalg.norm(int8, axis=-1))
        cosine = min(cosine, float(cosines.min()))
    return rows, cosine


def batch_inputs(processor, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch`` images (the photo, each with its own slight noise) and captions (the samples, repeated)."""
    pixels = processor.image_processor(images=[sample_image()] * batch, return_tensors="pt")["pixel_values"]
    pixels = pixels + 0.05 * torch.randn(pixels.shape, generator=torch.Generator().manual_seed(batch))
    text = tokenize_captions(processor.tokenizer, (SAMPLE_CAPTIONS * 2)[:batch])
    return pixels, text["input_ids"], text["attention_mask"]


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

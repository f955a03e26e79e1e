"""Print the parity figures (max abs difference vs cn_clip) per architecture, and the wall time of
converting a full-size ViT-B-16 training checkpoint.

Each model is cn_clip's own, seeded and saved as training does; each side runs through its own preprocessing
and tokenizer (cn_clip's ``image_transform`` and tokenizer; the converted folder's processor) on the photo and
captions the package ships, as ``--verify`` does.

Usage: .venv/bin/python benchmarks/parity_figures.py   (needs cn_clip; builds seeded models, no download)
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cn_clip.clip

from chclip_convert import convert_checkpoint
from chclip_convert.mapping.architecture import KNOWN_MODELS
from chclip_convert.verification.model_outputs import (
    SAMPLE_CAPTIONS,
    differences,
    original_architecture,
    quiet_transformers,
    run_converted,
    run_original,
    sample_image,
    write_seeded_original,
)

VOCAB = Path(cn_clip.clip.__file__).parent / "vocab.txt"
REDUCED_LAYERS = 2  # full width, 2 vision + 2 text layers: what tells the architectures apart, quickly


def main() -> None:
    quiet_transformers()  # no loading bars between the rows
    image = sample_image()
    full = {known.name: original_architecture(known.name) for known in KNOWN_MODELS}
    cut = {"vision_layers": REDUCED_LAYERS, "text_layers": REDUCED_LAYERS, "name": None, "notes": ()}
    rows = {f"{name} (2+2 layers)": replace(arch, **cut) for name, arch in full.items()}
    rows["ViT-B-16 (full size)"] = full["ViT-B-16"]
    columns = ("pixels", "image feat", "text feat", "logits")
    print(f"{'architecture':28}" + "".join(f" {name:>11}" for name in columns) + f" {'top-1':>6} {'convert s':>10}")
    for label, arch in rows.items():
        with tempfile.TemporaryDirectory() as work:
            checkpoint = write_seeded_original(arch, Path(work) / "ckpt.pt", seed=1)
            started = time.perf_counter()
            convert_checkpoint(checkpoint, Path(work) / "hf", vocab=VOCAB)
            seconds = time.perf_counter() - started
            original = run_original(checkpoint, VOCAB, [image], SAMPLE_CAPTIONS, architecture=arch)
            result = differences(original, run_converted(Path(work) / "hf", [image], SAMPLE_CAPTIONS))
            assert result["token ids equal"], label
            figures = [result[f"{name} max abs diff"] for name in ("pixel", "image feature", "text feature", "logits")]
            agrees = "yes" if result["top-1 agrees"] else "NO"
            print(f"{label:28}" + "".join(f" {value:11.2e}" for value in figures) + f" {agrees:>6} {seconds:10.2f}")


if __name__ == "__main__":
    main()

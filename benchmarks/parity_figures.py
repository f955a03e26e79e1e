"""Print the parity figures (max abs difference vs cn_clip) per architecture, and the wall time of
converting a full-size ViT-B-16 training checkpoint.

Usage: .venv/bin/python benchmarks/parity_figures.py   (needs cn_clip; builds seeded models, no download)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import image_batch, token_batch
from original import FULL_B16, REDUCED, build_model, save, training_checkpoint
from test_parity import converted_outputs, original_outputs

from chclip_convert import convert_checkpoint
from chclip_convert.compare import sample_image


def main() -> None:
    image = sample_image()
    variants = {**{f"{name} (2+2 layers)": v for name, v in REDUCED.items()}, "ViT-B-16 (full size)": FULL_B16}
    print(f"{'architecture':28} {'image feat':>11} {'text feat':>11} {'logits':>11} {'convert s':>10}")
    for label, variant in variants.items():
        with tempfile.TemporaryDirectory() as work:
            model = build_model(variant, seed=1)
            checkpoint = save(training_checkpoint(model), Path(work) / "ckpt.pt")
            started = time.perf_counter()
            convert_checkpoint(checkpoint, Path(work) / "hf")
            seconds = time.perf_counter() - started
            images, tokens = image_batch(image, model.visual.input_resolution), token_batch()
            original = original_outputs(model, images, tokens)
            converted = converted_outputs(Path(work) / "hf", images, tokens)
            diffs = [(a - b).abs().max().item() for a, b in zip(original, converted, strict=True)]
            print(f"{label:28} {diffs[0]:11.2e} {diffs[1]:11.2e} {diffs[2]:11.2e} {seconds:10.2f}")


if __name__ == "__main__":
    main()

"""Build a full-size ViT-B-16 with cn_clip (seeded), save it as training does, convert it with ``--verify``
and print the verification report.

Usage: .venv/bin/python benchmarks/verify_full_size.py   (needs cn_clip; no download)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from original import FULL_B16, VOCAB, build_model, save, training_checkpoint

from chclip_convert.cli import main as cli_main


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        checkpoint = save(training_checkpoint(build_model(FULL_B16, seed=5)), Path(work) / "clip_cn_vit-b-16.pt")
        return cli_main([str(checkpoint), str(Path(work) / "hf"), "--vocab", str(VOCAB), "--verify", "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())

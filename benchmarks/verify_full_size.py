"""Build a full-size ViT-B-16 with cn_clip (seeded), save it as training does, convert it with ``--verify``
and print the verification report.

Usage: .venv/bin/python benchmarks/verify_full_size.py   (needs cn_clip; no download)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cn_clip.clip

from chclip_convert.cli.main import main as cli_main
from chclip_convert.verification.model_outputs import original_architecture, write_seeded_original

VOCAB = Path(cn_clip.clip.__file__).parent / "vocab.txt"


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        checkpoint = write_seeded_original(
            original_architecture("ViT-B-16"), Path(work) / "clip_cn_vit-b-16.pt", seed=5
        )
        return cli_main([str(checkpoint), str(Path(work) / "hf"), "--vocab", str(VOCAB), "--verify", "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())

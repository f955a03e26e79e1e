"""Build a full-size ViT-B-16 with cn_clip (seeded), save it as training does, convert it with ``--verify``
and print the verification report.

Usage: .venv/bin/python benchmarks/verify_full_size.py   (needs cn_clip; no download)
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import cn_clip.clip
import torch
from cn_clip.clip.utils import create_model

from chclip_convert.architecture import KNOWN_MODELS, infer_architecture
from chclip_convert.cli import main as cli_main
from chclip_convert.compare import write_seeded_original

VOCAB = Path(cn_clip.clip.__file__).parent / "vocab.txt"


def vit_b_16():
    """The architecture read off cn_clip's own ViT-B-16, built on the meta device (shapes only)."""
    known = next(model for model in KNOWN_MODELS if model.name == "ViT-B-16")
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # create_model prints its config
        model = create_model(f"{known.name}@{known.text.name}")
    arch = infer_architecture(model.state_dict())
    assert arch.name == known.name, arch
    return arch


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        checkpoint = write_seeded_original(vit_b_16(), Path(work) / "clip_cn_vit-b-16.pt", seed=5)
        return cli_main([str(checkpoint), str(Path(work) / "hf"), "--vocab", str(VOCAB), "--verify", "--no-progress"])


if __name__ == "__main__":
    sys.exit(main())

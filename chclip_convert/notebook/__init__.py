"""The notebook layer: widgets (:mod:`.widgets`), plots (:mod:`.plots`) and, here, what the notebooks share —
quiet library output and the demo files they work on by default. The core never imports this package."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from ..compare import quiet_transformers
from ..demo import damaged_copy, write_demo_checkpoint

DEMO_DIR = Path("demo-work")


def prepare() -> None:
    """Silence progress bars and advisory warnings of the libraries, so cell outputs show only ours."""
    quiet_transformers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")


def checkpoint_or_demo(folder: str | Path = DEMO_DIR) -> tuple[Path, bool]:
    """The checkpoint named by ``CHCLIP_CHECKPOINT`` (set by ``scripts/run.sh CHECKPOINT``), else the
    embedded demo written into ``folder``; and whether it is the demo."""
    given = os.environ.get("CHCLIP_CHECKPOINT")
    if given:
        return Path(given), False
    return write_demo_checkpoint(folder), True


def fresh_demo_output(name: str, folder: str | Path = DEMO_DIR) -> Path:
    """A demo output path (folder or file), removed first so the notebook can be run again and again."""
    path = Path(folder) / name
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


__all__ = ["DEMO_DIR", "checkpoint_or_demo", "damaged_copy", "fresh_demo_output", "prepare", "write_demo_checkpoint"]

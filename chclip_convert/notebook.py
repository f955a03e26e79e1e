"""Helpers the notebooks share: quiet library output and the demo files they work on by default."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from .demo import damaged_copy, write_demo_checkpoint

DEMO_DIR = Path("demo-work")


def prepare() -> None:
    """Silence progress bars and advisory warnings of the libraries, so cell outputs show only ours."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
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
    """A demo output folder path, emptied first so the notebook can be run again and again."""
    path = Path(folder) / name
    shutil.rmtree(path, ignore_errors=True)
    return path


__all__ = ["checkpoint_or_demo", "damaged_copy", "fresh_demo_output", "prepare"]

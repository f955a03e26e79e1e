"""The notebook layer: the widgets (:mod:`.converter`, :mod:`.session`, :mod:`.picker`, :mod:`.widgets`), the plots
(:mod:`.plots`) and the work folder (:mod:`.workspace`). The core never imports this package."""

from __future__ import annotations

import os
import warnings

from .session import Session
from .workspace import Workspace


def prepare() -> None:
    """Silence progress bars and advisory warnings of the libraries, so cell outputs show only ours."""
    from ..compare import quiet_transformers

    quiet_transformers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")


def start(*, needs_folder: bool = False) -> Session:
    """What each notebook runs first: quiet libraries, and the work folder with the checkpoint (and converted
    folder) pickers."""
    prepare()
    return Session(needs_folder=needs_folder)


__all__ = ["Session", "Workspace", "prepare", "start"]

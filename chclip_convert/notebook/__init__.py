"""The notebook layer: the widgets, the plots and the work folder. The core never imports this package.

Each widget is a small class in fixed sections — widgets, connections, handlers (``_on_<widget>_<event>``),
layout (``.widget``) — and only a view: the work is done by the same functions the command line uses. Results
go into widget state (``.value``), so a notebook saved after running shows them, and tests drive the widgets by
setting values and clicking, without a browser.

- :mod:`.session`: the top of each notebook (work folder, checkpoint and converted-folder pickers);
  :mod:`.workspace` the work folder and its settings; :mod:`.picker` the path field with a folder browser;
- :mod:`.converter`: convert, with progress and Cancel; :mod:`.save`: save again, or back to cn_clip's format;
- :mod:`.key_grid`: the key report as a data grid (:mod:`.data_grid` the grid's shared options);
  :mod:`.histogram`, :mod:`.figures`, :mod:`.plots`, :mod:`.fonts`: the weight statistics' figures;
- :mod:`.diff_view`: compare two checkpoints or converted folders (the table and, in :mod:`.diff_plots`, the
  relative change per layer), as ``chclip-convert diff A B`` does.
"""

from __future__ import annotations

import os
import warnings

from chclip_convert.notebook.session import Session
from chclip_convert.notebook.workspace import Workspace


def prepare() -> None:
    """Silence progress bars and advisory warnings of the libraries, so cell outputs show only ours."""
    from chclip_convert.verification.model_outputs import quiet_transformers

    quiet_transformers()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")


def start(*, needs_folder: bool = False) -> Session:
    """What each notebook runs first: quiet libraries, and the work folder with the checkpoint (and converted
    folder) pickers."""
    prepare()
    return Session(needs_folder=needs_folder)


__all__ = ["Session", "Workspace", "prepare", "start"]

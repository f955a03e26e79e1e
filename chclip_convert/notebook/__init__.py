"""The notebook layer: the widgets, the plots and the work folder. The core never imports this package.

Every notebook opens the same way, with the page it is::

    from chclip_convert import notebook

    page = notebook.start(notebook.Page.CONVERTED)
    page.widget

Each widget is a small class in fixed sections — widgets, connections, handlers (``_on_<widget>_<event>``),
layout (``.widget``) — and only a view: the work is done by the same functions the command line uses. Results
go into widget state (``.value``), where tests read them after setting values and clicking, without a browser.
Notebooks are stored without widget state: what a saved notebook shows comes from its text outputs and, for
the widgets, from :func:`picture` (``scripts/refresh_notebooks.py`` re-runs and stores them).
docs/architecture.md names the module of each widget.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from chclip_convert.notebook.elements import in_voila, in_widget_terms, say_in_notebook
from chclip_convert.notebook.session import Page, Session
from chclip_convert.notebook.workspace import Workspace

if TYPE_CHECKING:
    from IPython.display import Image

    from chclip_convert.notebook.converter import ConvertUI
    from chclip_convert.notebook.run_view import RunSession

# Read by transformers and huggingface_hub when they are imported: set before, they keep both quiet without
# importing them (the converter page shows before torch and transformers load).
QUIET_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}


@overload
def start(page: Literal[Page.CONVERTER]) -> ConvertUI: ...
@overload
def start(page: Literal[Page.TRAINING_RUN]) -> RunSession: ...
@overload
def start(page: Literal[Page.CHECKPOINT, Page.CONVERTED]) -> Session: ...
def start(page: Page) -> Session | ConvertUI | RunSession:
    """What every notebook runs first: quiet libraries, and the top of the page — the work folder and what the
    notebook works on, the choice made last in any notebook (else the embedded demo). Display its ``.widget``."""
    _quiet_libraries()
    workspace = Workspace()
    if page is Page.CONVERTER:
        from chclip_convert.notebook.converter import ConvertUI

        checkpoint, _ = workspace.checkpoint()
        return ConvertUI(checkpoint, workspace.output_for(checkpoint), workspace=workspace)
    if page is Page.TRAINING_RUN:
        from chclip_convert.notebook.run_view import RunSession

        return RunSession(workspace)
    return Session(workspace, needs_folder=page is Page.CONVERTED)


def picture(path: str | Path, *, of_demo: bool = True) -> Image | None:
    """One of the pictures in ``docs/`` (taken by the browser tests on the demo): what the widget beside it looks
    like, for viewers of the saved notebook that show no widgets (GitHub, nbviewer) — they show this stored output.

    Nothing is shown on a Voila page (it shows the live widgets and no code), nor when the widget shows another
    checkpoint than the demo (``of_demo=False``), where the demo's picture would contradict it."""
    if in_voila() or not of_demo:
        return None
    from IPython.display import Image

    return Image(filename=str(path))


def _quiet_libraries() -> None:
    """Silence progress bars and advisory warnings of the libraries, so cell outputs show only ours."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
    if "transformers" in sys.modules:  # imported already: too late for the environment
        from chclip_convert.verification.model_outputs import quiet_transformers

        quiet_transformers()
    elif "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


__all__ = ["Page", "in_widget_terms", "picture", "say_in_notebook", "start"]

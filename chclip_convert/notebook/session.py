"""The top of every notebook: the work folder, the checkpoint picker and, for notebooks that read a converted
folder, its picker. A choice is remembered in the work folder's settings, so the other notebooks offer it."""

from __future__ import annotations

import enum
from pathlib import Path

import ipywidgets as W

from chclip_convert.errors import CheckpointReadError
from chclip_convert.files.preflight import looks_converted
from chclip_convert.notebook.converter import checkpoint_problem, message_html
from chclip_convert.notebook.elements import RUN_BELOW_HINT, Panel, notebook_hint, run_again
from chclip_convert.notebook.picker import PathPicker, standard_places
from chclip_convert.notebook.workspace import Workspace


class Page(enum.Enum):
    """What a notebook works on, and so what the top of its page offers to choose (``notebook.start(page)``)."""

    CONVERTER = "converter"  # 01 and the app: a checkpoint and the folder to write (the converter's own fields)
    CHECKPOINT = "checkpoint"  # 02: a checkpoint
    CONVERTED = "converted"  # 03, 04: a checkpoint and the folder it was converted into
    TRAINING_RUN = "training run"  # 05: a reference checkpoint and a folder of epochs


class Session:
    """The checkpoint a notebook works on (the one chosen last in any notebook — a new ``$CHCLIP_CHECKPOINT``
    counts as chosen — else the demo) and, with ``needs_folder``, the folder it was converted into. Pick
    another with the fields; the notebook's cells below read :attr:`checkpoint` and :meth:`folder` when they
    run."""

    def __init__(self, workspace: Workspace | None = None, *, needs_folder: bool = False) -> None:
        self.workspace = workspace or Workspace()
        checkpoint, _ = self.workspace.checkpoint()
        places = standard_places(self.workspace.root)
        # widgets
        self.header = W.HTML(self.workspace.header_html())
        self.checkpoint_picker = PathPicker(checkpoint, description="Checkpoint", kind="checkpoint", places=places)
        self.checkpoint_message = W.HTML()
        self.folder_picker = PathPicker(
            self.workspace.converted_folder(checkpoint) or "",
            description="Converted folder",
            kind="converted",
            placeholder="none yet: the checkpoint is converted into the work folder when needed",
            places=places,
        )
        self.folder_message = W.HTML()
        self.needs_folder = needs_folder
        # connections
        self.checkpoint_picker.path.observe(self._on_checkpoint_change, names="value")
        self.folder_picker.path.observe(self._on_folder_change, names="value")

    @property
    def checkpoint(self) -> Path:
        return Path(self.checkpoint_picker.value).expanduser().absolute()

    @property
    def is_demo(self) -> bool:
        return self.workspace.is_demo(self.checkpoint)

    def folder(self) -> Path:
        """The converted folder chosen; with none chosen, the checkpoint converted now into the work folder.
        A chosen path that holds no converted model is refused, naming it (never replaced by a conversion)."""
        if self.folder_picker.value:
            chosen = Path(self.folder_picker.value).expanduser().absolute()
            if not looks_converted(chosen):
                raise CheckpointReadError("holds no converted model (config.json beside weights).", path=chosen)
            return chosen
        folder = self.workspace.ensure_converted(self.checkpoint)
        self.folder_picker.path.value = str(folder)
        return folder

    # handlers
    def _on_checkpoint_change(self, change=None) -> None:
        if problem := checkpoint_problem(self.checkpoint_picker.value):
            self.checkpoint_message.value = message_html(problem, error=True)
            return
        self.checkpoint_message.value = message_html(run_again("use it"), error=False)
        self.workspace.remember(self.checkpoint)
        self.folder_picker.path.value = str(self.workspace.converted_folder(self.checkpoint) or "")

    def _on_folder_change(self, change=None) -> None:
        value = self.folder_picker.value
        if value and not looks_converted(Path(value).expanduser()):
            said = f"{Path(value).expanduser()}: no converted model here (no config.json beside weights)."
            self.folder_message.value = message_html(said, error=True)
            return
        self.folder_message.value = ""
        if value:
            self.workspace.remember(self.checkpoint, Path(value).expanduser())

    # layout
    @property
    def widget(self) -> W.VBox:
        parts = [self.header, self.checkpoint_picker.widget, self.checkpoint_message]
        if self.needs_folder:
            parts += [self.folder_picker.widget, self.folder_message]
        parts += notebook_hint(RUN_BELOW_HINT)
        return Panel(parts, name="The checkpoint" + (" and its converted folder" if self.needs_folder else ""))

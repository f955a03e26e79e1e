"""A path field with a folder browser beside it, on plain ipywidgets.

JupyterLab's own file browser cannot reach a checkpoint outside the server's folder, and the one widget
package for this (ipyfilechooser) has had no release since 2021 and cannot tell a converted folder from any
other. This one lists what matters here: checkpoints with their sizes, converted folders marked as such.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as W

from chclip_convert.files.preflight import looks_converted
from chclip_convert.names import CHECKPOINT_SUFFIXES
from chclip_convert.units import human_size

WIDE = W.Layout(width="640px")
DESCRIPTION = {"description_width": "110px"}
LISTED = 500  # entries shown per folder; a folder with more says how many it left out

KINDS = ("checkpoint", "converted", "source", "output", "folder")  # what a picker chooses: see PathPicker
LISTS_FILES = ("checkpoint", "source")
PICKS_CONVERTED = ("converted", "source")


def standard_places(work_folder: Path | None = None) -> dict[str, Path]:
    """The shortcut buttons the notebooks' pickers show: the work folder (when there is one) and home."""
    return ({"Work folder": work_folder} if work_folder is not None else {}) | {"Home": Path.home()}


class PathPicker:
    """A text field for a path, and a **Browse** toggle that opens a folder listing to choose it from.

    ``kind`` says what is chosen: ``"checkpoint"`` (a ``.pt`` file), ``"converted"`` (a folder holding a
    converted model), ``"source"`` (either), ``"output"`` (a folder to write: the listing picks where, the name
    typed stays) or ``"folder"`` (the folder listed, with *Use this folder*).
    ``places`` are shortcut buttons (label → folder), such as the work folder and the home folder.
    """

    def __init__(
        self,
        value: str | Path = "",
        *,
        description: str,
        kind: str = "checkpoint",
        placeholder: str = "",
        places: dict[str, Path] | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        self.kind = kind
        self.places = places or standard_places()
        # widgets
        self.path = W.Text(str(value), description=description, placeholder=placeholder, layout=WIDE, style=DESCRIPTION)
        self.browse = W.ToggleButton(False, description="Browse…", icon="folder-open", layout=W.Layout(width="100px"))
        self.location = W.HTML()
        self.up = W.Button(description="Up", icon="arrow-up", layout=W.Layout(width="70px"))
        self.place_buttons = [W.Button(description=label, layout=W.Layout(width="auto")) for label in self.places]
        here = "Use this folder" if kind == "folder" else "Write here"
        self.here = W.Button(description=here, icon="check", layout=W.Layout(width="auto"))
        self.listing = W.Select(options=[], rows=12, layout=W.Layout(width="750px"))
        self.panel = W.VBox(layout=W.Layout(display="none", margin="0 0 6px 115px"))
        self.folder = next(iter(self.places.values()))  # the folder listed; set by open() when browsing starts
        # connections
        self.browse.observe(self._on_browse_change, names="value")
        self.up.on_click(self._on_up_click)
        for button, place in zip(self.place_buttons, self.places.values(), strict=True):
            button.on_click(lambda _button, place=place: self.open(place))
        self.here.on_click(self._on_here_click)
        self.listing.observe(self._on_listing_change, names="value")

    @property
    def value(self) -> str:
        return self.path.value.strip()

    def open(self, folder: Path) -> None:
        """List ``folder`` in the browser."""
        self.folder = Path(folder).expanduser().absolute()
        entries, note = folder_entries(self.folder, self.kind)
        said = f" — {html.escape(note)}" if note else ""
        self.location.value = f"<code>{html.escape(str(self.folder))}</code>{said}"
        self.listing.unobserve(self._on_listing_change, names="value")
        self.listing.options = entries
        self.listing.value = None
        self.listing.observe(self._on_listing_change, names="value")

    # handlers
    def _on_browse_change(self, change=None) -> None:
        self.panel.layout.display = "flex" if self.browse.value else "none"
        if self.browse.value:
            self.open(self._start_folder())

    def _on_up_click(self, button=None) -> None:
        self.open(self.folder.parent)

    def _on_here_click(self, button=None) -> None:
        name = Path(self.value).name or "converted-hf"  # an output keeps the name typed
        self._choose(self.folder if self.kind == "folder" else self.folder / name)

    def _on_listing_change(self, change=None) -> None:
        chosen = self.listing.value
        if chosen is None:
            return
        if chosen.is_dir() and not (self.kind in PICKS_CONVERTED and looks_converted(chosen)):
            self.open(chosen)
        else:
            self._choose(chosen)

    def _choose(self, path: Path) -> None:
        self.path.value = str(path)
        self.browse.value = False

    def _start_folder(self) -> Path:
        """Where browsing starts: the folder the field names (for an output or a converted model, the one it is
        in, so that it is listed), else the folder of the file it names, else the first place."""
        current = Path(self.value).expanduser().absolute() if self.value else None
        inside = self.kind == "output" or (
            self.kind in PICKS_CONVERTED and current is not None and looks_converted(current)
        )
        candidates = [] if current is None else [current.parent] if inside else [current, current.parent]
        return next((folder for folder in candidates if folder.is_dir()), next(iter(self.places.values())))

    # layout
    @property
    def widget(self) -> W.VBox:
        buttons = [self.up, *self.place_buttons] + ([self.here] if self.kind in ("output", "folder") else [])
        self.panel.children = [W.HBox([*buttons, self.location]), self.listing]
        return W.VBox([W.HBox([self.path, self.browse]), self.panel])


def folder_entries(folder: Path, kind: str) -> tuple[list[tuple[str, Path]], str]:
    """The listing's rows (label, path) for ``folder`` — folders first, then checkpoints for the kinds that
    choose files — and a note (unreadable folder, entries left out)."""
    try:
        shown = (child for child in folder.iterdir() if not child.name.startswith(".") and _readable(child))
        children = sorted(shown, key=lambda p: (not p.is_dir(), p.name.lower()))
    except OSError as error:
        return [], f"cannot list this folder: {error.strerror or error}"
    rows = []
    for child in children:
        if child.is_dir():
            mark, said = ("▣", "   converted model") if looks_converted(child) else ("▸", "")
            rows.append((f"{mark} {child.name}/{said}", child))
        elif kind in LISTS_FILES and child.suffix.lower() in CHECKPOINT_SUFFIXES:
            rows.append((f"  {child.name}   {_size(child)}", child))
    note = f"{len(rows) - LISTED} more not shown" if len(rows) > LISTED else ""
    return rows[:LISTED], note


def _readable(path: Path) -> bool:
    """Whether this user may look at ``path``: a folder of another user's, say, may not be opened."""
    try:
        if path.is_dir():
            os.scandir(path).close()
        return True
    except OSError:
        return False


def _size(path: Path) -> str:
    try:
        return human_size(path.stat().st_size)
    except OSError:
        return ""

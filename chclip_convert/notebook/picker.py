"""A path field with a folder browser beside it, on plain ipywidgets.

JupyterLab's own file browser cannot reach a checkpoint outside the server's folder, and the one widget
package for this (ipyfilechooser) has had no release since 2021 and cannot tell a converted folder from any
other. This one lists what matters here: checkpoints with their sizes, converted folders marked as such, and
hidden ones (``~/.cache/…``) on request. A folder typed into the field while the listing is open is listed.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

import ipywidgets as W

from chclip_convert.files.preflight import looks_converted
from chclip_convert.names import CHECKPOINT_SUFFIXES
from chclip_convert.notebook.elements import wrapping_row
from chclip_convert.notebook.fonts import cjk_html
from chclip_convert.units import human_size

# A field 640 px wide that gives way in a narrower panel (notebooks side by side), and buttons that do not: a
# button squeezed shows "B…" for "Browse…".
WIDE = W.Layout(width="640px", max_width="100%", flex="0 1 auto", min_width="14em")
KEEP = {"flex": "0 0 auto"}  # a button's own width, whatever the panel's
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
    *Show hidden* lists the entries whose names start with a dot. While the listing is open, a path typed into
    the field that names an existing folder (or a file in one) lists that folder, hidden or not.
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
        self.browse = W.ToggleButton(
            False, description="Browse…", icon="folder-open", layout=W.Layout(width="100px", **KEEP)
        )
        self.location = W.HTML()
        self.up = W.Button(description="Up", icon="arrow-up", layout=W.Layout(width="70px", **KEEP))
        self.hidden = W.Checkbox(
            False, description="Show hidden", indent=False, layout=W.Layout(width="auto", margin="2px 16px 0 8px")
        )
        self.place_buttons = [
            W.Button(description=label, layout=W.Layout(width="auto", **KEEP)) for label in self.places
        ]
        here = "Use this folder" if kind == "folder" else "Write here"
        self.here = W.Button(description=here, icon="check", layout=W.Layout(width="auto", **KEEP))
        self.listing = W.Select(options=[], rows=12, layout=W.Layout(width="750px", max_width="100%"))
        self.panel = W.VBox(layout=W.Layout(display="none", margin="0 0 6px 115px"))
        self.folder = next(iter(self.places.values()))  # the folder listed; set by open() when browsing starts
        # connections
        self.browse.observe(self._on_browse_change, names="value")
        self.path.observe(self._on_path_change, names="value")
        self.hidden.observe(self._on_hidden_change, names="value")
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
        entries, note = folder_entries(self.folder, self.kind, hidden=self.hidden.value)
        said = f" — {html.escape(note)}" if note else ""
        self.location.value = cjk_html(f"<code>{html.escape(str(self.folder))}</code>{said}")
        self.listing.unobserve(self._on_listing_change, names="value")
        self.listing.options = entries
        self.listing.value = None
        self.listing.observe(self._on_listing_change, names="value")

    # handlers
    def _on_browse_change(self, change=None) -> None:
        self.panel.layout.display = "flex" if self.browse.value else "none"
        if self.browse.value:
            self.open(self._start_folder())

    def _on_path_change(self, change=None) -> None:
        """While browsing, list the folder the field now names; a path that does not exist (one being typed)
        changes nothing, so typing goes on undisturbed."""
        if not (self.browse.value and self.value and os.path.exists(Path(self.value).expanduser())):
            return
        named = self._named_folder()
        if named is not None and named != self.folder:
            self.open(named)

    def _on_hidden_change(self, change=None) -> None:
        if self.browse.value:
            self.open(self.folder)

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
        """Where browsing starts: the folder the field names, else the first place."""
        return self._named_folder() or next(iter(self.places.values()))

    def _named_folder(self) -> Path | None:
        """The existing folder to list for the field's path, or ``None``: the folder it names (for an output or
        a converted model, the one it is in, so that it is listed), else the folder of the file it names."""
        if not self.value:
            return None
        current = Path(self.value).expanduser().absolute()
        inside = self.kind == "output" or (self.kind in PICKS_CONVERTED and looks_converted(current))
        candidates = [current.parent] if inside else [current, current.parent]
        return next((folder for folder in candidates if os.path.isdir(folder)), None)

    # layout
    @property
    def widget(self) -> W.VBox:
        here = [self.here] if self.kind in ("output", "folder") else []
        self.panel.children = [
            wrapping_row([self.up, *self.place_buttons, *here, self.hidden, self.location]),
            self.listing,
        ]
        return W.VBox([W.HBox([self.path, self.browse]), self.panel])


def folder_entries(folder: Path, kind: str, *, hidden: bool = False) -> tuple[list[tuple[str, Path]], str]:
    """The listing's rows (label, path) for ``folder`` — folders first, then checkpoints for the kinds that
    choose files; names starting with a dot only with ``hidden`` — and a note (unreadable folder, naming it;
    entries left out)."""
    try:
        shown = (c for c in folder.iterdir() if (hidden or not c.name.startswith(".")) and _readable(c))
        children = sorted(shown, key=lambda p: (not p.is_dir(), p.name.lower()))
    except OSError as error:
        return [], f"cannot list this folder ({folder}): {error.strerror or error}"
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

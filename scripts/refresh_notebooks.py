"""Run the notebooks afresh and store them as they are committed: their outputs on the embedded demo, in a work
folder of their own, with no widget state and nothing of this machine.

Usage: .venv/bin/python scripts/refresh_notebooks.py [NOTEBOOK.ipynb ...]   (default: every notebook in notebooks/)

A stored output is kept when nbval compares it (see notebooks/nbval_sanitize.cfg) or a reader of the saved
notebook sees it: the text outputs, static figures, the text form of each widget, and the pictures of widgets
(``notebook.picture``). Left out, since nothing checks them and without a kernel they show nothing:

- the widget state (``metadata.widgets``, which nbclient stores by default): megabytes of grid rows and figure
  data, of use only to a live kernel;
- the widget views (``application/vnd.jupyter.widget-view+json``): without the state they name no widget;
- the execution timings of the cells.

The work folder's real path is shown as ``~/chclip-convert-work``, the default one.
"""

from __future__ import annotations

import base64
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
WORK_NAME = "chclip-convert-work"  # the default work folder's name, which the sanitiser recognises
SHOWN_WORK = f"~/{WORK_NAME}"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PICTURE = "image/png"
# A cell that shows a picture of a widget: notebook.picture("../docs/weight_stats.png", of_demo=page.is_demo)
PICTURE_CALL = re.compile(r"""notebook\.picture\(\s*["']([^"']+)["']""")
CELL_TIMEOUT_S = 1200


def main(argv: list[str]) -> None:
    from nbclient import NotebookClient

    paths = [Path(arg).absolute() for arg in argv] or sorted(NOTEBOOKS.glob("*.ipynb"))
    with tempfile.TemporaryDirectory(prefix="chclip-notebooks-") as tmp:
        work = Path(tmp) / WORK_NAME
        os.environ.update({"CHCLIP_WORK": str(work), "HF_HUB_OFFLINE": "1"})
        os.environ.pop("CHCLIP_CHECKPOINT", None)  # the demo, as nbval runs them
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            NotebookClient(
                nb,
                timeout=CELL_TIMEOUT_S,
                resources={"metadata": {"path": str(path.parent)}},
                store_widget_state=False,
                record_timing=False,
            ).execute()
            tidy(nb, work)
            nbformat.write(nb, path)
            print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1000:.0f} kB")


def tidy(nb: nbformat.NotebookNode, work: Path) -> None:
    """Drop what nothing checks and nobody can see (above), and show ``work`` as the default work folder."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if "data" in output:
                output.data.pop(WIDGET_VIEW, None)
                for kind, value in output.data.items():
                    if isinstance(value, str) and kind != PICTURE:
                        output.data[kind] = machine_independent(value, work)
            if "text" in output:
                output.text = machine_independent(output.text, work)
        cell.outputs = [output for output in cell.outputs if output.get("data", True)]


def machine_independent(text: str, work: Path) -> str:
    for path in {str(work.resolve()), str(work)}:
        text = text.replace(path, SHOWN_WORK)
    return text


def picture_cells(nb: nbformat.NotebookNode) -> list[tuple[nbformat.NotebookNode, str]]:
    """Each code cell that shows a picture, with the path it names (relative to the notebook)."""
    found = []
    for cell in nb.cells:
        if cell.cell_type == "code" and (match := PICTURE_CALL.search(cell.source)):
            found.append((cell, match.group(1)))
    return found


def store_pictures(path: Path) -> bool:
    """Put the current file of each picture a notebook shows into its stored output, as running the cell would;
    whether anything changed."""
    nb = nbformat.read(path, as_version=4)
    changed = False
    for cell, picture in picture_cells(nb):
        content = (path.parent / picture).read_bytes()
        for output in cell.outputs:
            if PICTURE in output.get("data", {}) and base64.b64decode(output.data[PICTURE]) != content:
                output.data[PICTURE], changed = base64.b64encode(content).decode("ascii"), True
    if changed:
        nbformat.write(nb, path)
    return changed


if __name__ == "__main__":
    main(sys.argv[1:])

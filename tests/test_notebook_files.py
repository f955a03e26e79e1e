"""The committed notebooks as files: small, without widget state, alike at the top, and readable where no kernel
runs. scripts/refresh_notebooks.py stores them so; nbval checks their outputs."""

from __future__ import annotations

import base64
import json
import re

import pytest
from support import ROOT

from chclip_convert.notebook import Page

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LIMIT_BYTES = 600_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
OPENING = re.compile(
    r"from chclip_convert import notebook\n\npage = notebook\.start\(notebook\.Page\.(\w+)\)\npage\.widget"
)
PICTURE = re.compile(r"""notebook\.picture\("([^"]+)"[,)]""")
MACHINE_WORK_FOLDER = re.compile(r"(/[\w.@+-]+)+/chclip-convert-work")
LITERAL_COMPARISON = re.compile(r"""(==|!=|\bin)\s*[(\[{]?\s*["']""")


def read(path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def code_cells(path) -> list[dict]:
    return [cell for cell in read(path)["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def texts(cell: dict) -> list[str]:
    """Every text a stored output holds (streams, and the data that are not pictures)."""
    found = []
    for output in cell.get("outputs", []):
        found.append("".join(output.get("text", "")))
        found += ["".join(value) for kind, value in output.get("data", {}).items() if kind.startswith("text/")]
    return found


@pytest.fixture(params=NOTEBOOKS, ids=lambda path: path.name)
def notebook(request):
    return request.param


def test_there_are_notebooks():
    assert {path.name for path in NOTEBOOKS} >= {"01_convert.ipynb", "app.ipynb"}


def test_a_notebook_is_small(notebook):
    assert notebook.stat().st_size < LIMIT_BYTES, "run scripts/refresh_notebooks.py, which stores no widget state"


def test_a_notebook_holds_no_widget_state(notebook):
    """The state (megabytes of grid rows and figure data) only a live kernel can use, nor views that name it."""
    assert "widgets" not in read(notebook)["metadata"]
    for cell in code_cells(notebook):
        assert not any(WIDGET_VIEW in output.get("data", {}) for output in cell.get("outputs", [])), source(cell)


def test_every_notebook_opens_the_same_way(notebook):
    first = "\n".join(line for line in source(code_cells(notebook)[0]).splitlines() if not line.startswith("#"))
    match = OPENING.fullmatch(first)
    assert match, first
    assert match.group(1) in Page.__members__


def test_stored_outputs_show_the_default_work_folder_not_this_machines(notebook):
    for cell in code_cells(notebook):
        for text in texts(cell):
            assert not MACHINE_WORK_FOLDER.search(text), text


def test_each_picture_stored_is_the_file_it_names(notebook):
    """What a notebook shows beside its widgets for viewers without them is the picture in docs/ as it is now
    (scripts/make_readme_images.py refreshes both)."""
    for cell in code_cells(notebook):
        if match := PICTURE.search(source(cell)):
            stored = [output["data"]["image/png"] for output in cell["outputs"] if "image/png" in output["data"]]
            picture = notebook.parent / match.group(1)
            assert [base64.b64decode("".join(data)) for data in stored] == [picture.read_bytes()], match.group(1)


def test_cells_compare_with_the_packages_names_not_string_literals(notebook):
    for cell in code_cells(notebook):
        code = "\n".join(line.split("#")[0] for line in source(cell).splitlines())
        assert not LITERAL_COMPARISON.search(code), source(cell)

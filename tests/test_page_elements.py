"""What the pages say depends on where they are shown: JupyterLab, Voila, a saved notebook's viewer."""

from __future__ import annotations

import re

import ipywidgets as W
import pytest

from chclip_convert.errors import ConversionError
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.files.output import check_output_dir
from chclip_convert.mapping.architecture import infer_architecture
from chclip_convert.mapping.report import FIXES
from chclip_convert.notebook.elements import (
    LinkedHTML,
    Panel,
    in_voila,
    in_widget_terms,
    notebook_link,
    run_again,
    say_in_notebook,
)
from chclip_convert.notebook.run_view import RunSession
from chclip_convert.notebook.session import Session
from chclip_convert.notebook.workspace import Workspace

OPTION = re.compile(r"--[a-z][a-z-]+")


@pytest.fixture
def voila(monkeypatch):
    """This kernel as Voila's: Voila names itself in the CGI variables it gives its kernels."""
    monkeypatch.setenv("SERVER_SOFTWARE", "voila/0.5.13")


def test_a_panel_reads_as_a_sentence_without_the_state_of_its_children(tmp_path):
    session = Session(Workspace(tmp_path / "work"))
    text = session.widget._repr_mimebundle_()["text/plain"]
    assert text == "The checkpoint (run this cell to show it)"
    assert str(tmp_path) not in text  # a stored output names no machine's work folder
    assert isinstance(session.widget, Panel)


def test_linked_html_holds_its_value_as_display_data_the_notebook_renders():
    linked = LinkedHTML()
    assert linked.output.outputs == ()
    linked.value = f"<b>Next:</b> {notebook_link('02_inspect_keys.ipynb')}"
    (shown,) = linked.output.outputs
    assert shown["data"]["text/html"] == linked.value and shown["data"]["text/plain"] == "Next: 02_inspect_keys.ipynb"
    assert 'href="02_inspect_keys.ipynb"' in linked.value and 'target="_blank"' in linked.value
    linked.value = ""
    assert linked.output.outputs == ()


def test_instructions_about_cells_are_said_only_where_there_are_cells(monkeypatch, capsys):
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    monkeypatch.delenv("VOILA_BASE_URL", raising=False)
    assert not in_voila() and run_again("use it") == "Run the cells below to use it."
    say_in_notebook("click Save, then run this cell again")
    assert capsys.readouterr().out == "click Save, then run this cell again\n"
    monkeypatch.setenv("SERVER_SOFTWARE", "voila/0.5.13")
    assert in_voila() and run_again("use it") == "Reload the page to use it."
    say_in_notebook("click Save, then run this cell again")
    assert capsys.readouterr().out == ""


def test_a_session_in_voila_says_reload_not_run_the_cells(voila, tmp_path, demo_checkpoint):
    session = Session(Workspace(tmp_path / "work"))
    session.checkpoint_picker.path.value = str(demo_checkpoint)
    assert "Reload the page to use it." in session.checkpoint_message.value
    assert "cells" not in session.checkpoint_message.value
    shown = " ".join(child.value for child in session.widget.children if isinstance(child, W.HTML))
    assert "cells" not in shown


def test_a_session_in_a_notebook_says_to_run_the_cells_below(monkeypatch, tmp_path):
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    monkeypatch.delenv("VOILA_BASE_URL", raising=False)
    for widget in (Session(Workspace(tmp_path / "work")).widget, RunSession(Workspace(tmp_path / "work")).widget):
        shown = " ".join(child.value for child in widget.children if isinstance(child, W.HTML))
        assert "run the cells below" in shown


def test_every_option_the_core_tells_users_to_pass_has_a_widget_term(demo_checkpoint, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("x")
    with pytest.raises(ConversionError) as refused:
        check_output_dir(occupied, input_path=demo_checkpoint, overwrite=False)
    messages = [  # the core's own messages that name an option (the demo's widths are no known model's)
        *FIXES.values(),
        *infer_architecture(load_checkpoint(demo_checkpoint).state_dict).notes,
        str(refused.value),
    ]
    assert all(OPTION.search(message) for message in messages[:1] + messages[-1:])
    for message in messages:
        said = in_widget_terms(message)
        assert not OPTION.search(said), said
    assert 'tick "Drop unused source keys"' in in_widget_terms(FIXES["unused"])
    assert "(1 head)" in messages[-2] and "(1 heads)" not in messages[-2]

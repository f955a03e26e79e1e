"""What the pages say depends on where they are shown: JupyterLab, Voila, a saved notebook's viewer."""

from __future__ import annotations

import ast
import html
import re
import shlex
from pathlib import Path

import ipywidgets as W
import pytest
from support import ROOT

from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.mapping.architecture import infer_architecture
from chclip_convert.mapping.report import FIXES
from chclip_convert.notebook.converter import next_steps_html
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
COMMAND = re.compile(r"chclip-convert [a-z]+ [^.;)]*")


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


# The modules whose messages the converter and 05's epochs show, through in_widget_terms.
SHOWN_BY_THE_CONVERTERS = (
    "changes/epochs.py", "conversion/state_dict.py", "export/pipeline.py", "files/assets.py", "files/output.py",
    "mapping/architecture.py", "mapping/report.py",
)  # fmt: skip


def test_every_option_the_converters_messages_name_is_said_as_a_widget_control():
    # every string of those modules that names an option (f-strings with sample values), from the source itself,
    # so that a message added later is covered too
    advice = [text for module in SHOWN_BY_THE_CONVERTERS for text in option_texts(ROOT / "chclip_convert" / module)]
    assert len(advice) >= 10 and any("Pass --overwrite" in text for text in advice)
    for text in advice:
        for said in (in_widget_terms(text), in_widget_terms(text, overwrite="Replace converted folders")):
            assert not OPTION.search(COMMAND.sub("", said)), (text, said)  # an option only in a command to run
    assert in_widget_terms("Pass --overwrite (overwrite=True) to replace it.") == 'Tick "Overwrite" to replace it.'
    assert 'tick "Drop unused source keys"' in in_widget_terms(FIXES["unused"])


def test_the_notes_on_a_model_of_one_head_say_head(demo_checkpoint):
    notes = infer_architecture(load_checkpoint(demo_checkpoint).state_dict).notes
    assert any("(1 head)" in note for note in notes) and not any("(1 heads)" in note for note in notes)


def option_texts(module: Path) -> list[str]:
    """The strings of ``module`` (not docstrings) that name a command-line option; an f-string's fields filled
    with a sample value (``vision`` for a tower, ``--vision-heads`` for an option, else 16)."""

    def sample(field: ast.FormattedValue) -> str:
        code = ast.unparse(field.value)
        return "vision" if "tower" in code else "--vision-heads" if "option" in code else "16"

    tree = ast.parse(module.read_text())
    with_docstrings = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, with_docstrings) and ast.get_docstring(node, clean=False) is not None
    }
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append("".join(v.value if isinstance(v, ast.Constant) else sample(v) for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            texts.append(node.value)
    return [text for text in texts if OPTION.search(text) and " " in text]  # a sentence, not an option's name


def test_the_summarys_terminal_command_is_quoted_for_the_shell_and_breaks_only_after_slashes(tmp_path):
    checkpoint, folder = tmp_path / "my models" / "epoch 3.pt", tmp_path / "out-hf"
    said = next_steps_html(checkpoint, folder)
    command = html.unescape(re.sub(r"<[^>]+>", "", said.split("or in a terminal:")[1]))
    assert shlex.split(command) == ["chclip-convert", "verify", str(checkpoint), str(folder)]
    for piece in re.findall(r"white-space:nowrap'>([^<]*)<", said):  # unbroken pieces: only a slash ends one early
        assert "/" not in piece[:-1]

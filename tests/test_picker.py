"""The path picker reaches what users have: hidden folders (``~/.cache/…``) on request, the folder typed into
the field while the listing is open, and messages that name the path they are about — without a browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.files import locked_folder

from chclip_convert.names import CONFIG_FILE
from chclip_convert.notebook.converter import ConvertUI, checkpoint_problem
from chclip_convert.notebook.picker import PathPicker, folder_entries


@pytest.fixture
def home(tmp_path) -> Path:
    """A home-like folder: a visible ``models/`` with one checkpoint, and a hidden ``.cache/chclip/`` holding a
    hidden folder and a checkpoint (listing looks at names only, so any bytes do)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "visible.pt").write_bytes(b"x")
    cache = tmp_path / ".cache" / "chclip"
    (cache / ".partial").mkdir(parents=True)
    (cache / "epoch3.pt").write_bytes(b"x" * 10)
    (cache / ".tmp-epoch4.pt").write_bytes(b"x")
    return tmp_path


def names(picker: PathPicker) -> list[str]:
    return [path.name for _, path in picker.listing.options]


def test_hidden_entries_are_listed_only_with_show_hidden(home):
    assert [path.name for _, path in folder_entries(home, "checkpoint")[0]] == ["models"]
    assert [path.name for _, path in folder_entries(home, "checkpoint", hidden=True)[0]] == [".cache", "models"]
    picker = PathPicker(description="Checkpoint", places={"Home": home})
    picker.browse.value = True
    assert picker.folder == home and names(picker) == ["models"]
    picker.hidden.value = True  # lists the folder again at once
    assert picker.folder == home and names(picker) == [".cache", "models"]
    picker.listing.value = home / ".cache"
    picker.listing.value = home / ".cache" / "chclip"
    assert picker.folder == home / ".cache" / "chclip"
    assert names(picker) == [".partial", ".tmp-epoch4.pt", "epoch3.pt"]
    picker.hidden.value = False
    assert picker.folder == home / ".cache" / "chclip" and names(picker) == ["epoch3.pt"]
    picker.listing.value = home / ".cache" / "chclip" / "epoch3.pt"
    assert picker.value == str(home / ".cache" / "chclip" / "epoch3.pt") and not picker.browse.value


def test_show_hidden_sits_in_the_browse_panels_button_row(home):
    picker = PathPicker(description="Checkpoint", places={"Home": home})
    row = picker.widget.children[1].children[0]
    assert picker.hidden in row.children and row.children[-1] is picker.location


def test_a_folder_typed_while_browsing_is_listed_hidden_or_not(home):
    picker = PathPicker(description="Checkpoint", places={"Home": home})
    picker.browse.value = True
    assert picker.folder == home
    cache = home / ".cache" / "chclip"
    for partial in (str(home / ".ca"), str(home / ".cache" / "chc")):  # typed on the way: nothing moves
        picker.path.value = partial
        assert picker.folder == home and names(picker) == ["models"]
    picker.path.value = str(cache)  # a hidden folder, with Show hidden off: listed all the same
    assert picker.folder == cache and names(picker) == ["epoch3.pt"]
    assert str(cache) in picker.location.value
    picker.path.value = str(home / "models" / "visible.pt")  # a file: its folder is listed
    assert picker.folder == home / "models" and names(picker) == ["visible.pt"]
    assert picker.browse.value and picker.value == str(home / "models" / "visible.pt")  # the typing stays


def test_typing_while_not_browsing_changes_nothing(home):
    picker = PathPicker(description="Checkpoint", places={"Home": home})
    picker.browse.value = True
    picker.browse.value = False
    before = list(picker.listing.options)
    picker.path.value = str(home / ".cache" / "chclip")
    assert picker.folder == home and picker.listing.options == tuple(before) and before
    picker.browse.value = True  # opened now, it starts at the folder typed
    assert picker.folder == home / ".cache" / "chclip"


def test_a_converted_folder_typed_for_a_converted_picker_is_chosen_not_entered(tmp_path):
    converted = tmp_path / "models" / ".converted-hf"  # what looks_converted looks at: the files' names
    converted.mkdir(parents=True)
    for name in (CONFIG_FILE, "model.safetensors"):
        (converted / name).write_text("{}")
    picker = PathPicker(description="Converted folder", kind="converted", places={"Home": tmp_path})
    picker.browse.value = True
    picker.path.value = str(converted)
    assert picker.folder == converted.parent and picker.value == str(converted)
    picker.hidden.value = True
    assert converted in [path for _, path in picker.listing.options]


def test_checkpoint_messages_name_their_path(home):
    cache = home / ".cache" / "chclip"
    assert checkpoint_problem(str(cache)) == f"{cache}: is a folder; give the checkpoint file (.pt) inside it."
    assert checkpoint_problem(str(cache / "gone.pt")) == f"{cache / 'gone.pt'}: no such file."
    (cache / "empty.pt").write_bytes(b"")
    assert checkpoint_problem(str(cache / "empty.pt")).startswith(f"{cache / 'empty.pt'}: the file is empty")
    assert checkpoint_problem("") == "Enter the path of an original Chinese-CLIP .pt checkpoint, or Browse for it."
    ui = ConvertUI(str(cache), str(home / "out"))
    assert f"{cache}: is a folder" in ui.checkpoint_message.value and ui.convert_button.disabled


def test_a_relative_path_is_named_in_full(home, monkeypatch):
    monkeypatch.chdir(home)
    assert checkpoint_problem("models") == f"{home / 'models'}: is a folder; give the checkpoint file (.pt) inside it."


def test_an_unreadable_folder_is_named_in_its_note():
    with locked_folder() as (base, locked):
        picker = PathPicker(description="Checkpoint", places={"Here": base})
        picker.browse.value = True
        picker.path.value = str(locked)  # a folder one may see but not enter: listed, and said so
        location = picker.location.value
        problem = checkpoint_problem(str(locked / "a.pt"))
    assert picker.folder == locked and picker.listing.options == ()
    assert f"cannot list this folder ({locked}): Permission denied" in location
    assert problem == f"{locked / 'a.pt'}: cannot be read: Permission denied."

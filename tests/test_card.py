"""A folder meant for sharing: its model card parses as the Hub reads it (huggingface_hub's ``ModelCard``, offline),
and its ``conversion_report.json`` names nothing of this machine, while everything reading the report still finds
the checkpoint, in the new form and in older folders' absolute one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from huggingface_hub import ModelCard

from chclip_convert import convert_checkpoint, convert_epochs
from chclip_convert.changes.epochs import UP_TO_DATE
from chclip_convert.cli.main import main
from chclip_convert.files.records import read_report, recorded_source
from chclip_convert.notebook.workspace import converted_from


def strings(value) -> list[str]:
    """Every string in a JSON value."""
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings(item)]
    return [value] if isinstance(value, str) else []


def test_the_card_parses_with_the_hubs_fields(demo_checkpoint, tmp_path):
    folder = tmp_path / "hf"
    convert_checkpoint(
        demo_checkpoint, folder, license="apache-2.0", base_model="OFA-Sys/chinese-clip-vit-base-patch16"
    )
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "zero-shot-image-classification"
    assert data.language == "zh" and data.license == "apache-2.0"
    assert data.base_model == "OFA-Sys/chinese-clip-vit-base-patch16" and data.base_model_relation == "finetune"
    assert "chinese-clip" in data.tags
    (example,) = data.widget
    assert example["src"].startswith("https://") and "猫" in example["candidate_labels"]
    assert "hf upload YOUR-NAME/MODEL-NAME path/to/this/folder ." in card.text


def test_without_options_the_card_claims_no_licence_and_no_base_model(demo_checkpoint, tmp_path):
    convert_checkpoint(demo_checkpoint, tmp_path / "hf")
    data = ModelCard.load(tmp_path / "hf" / "README.md").data.to_dict()
    assert "license" not in data and "base_model" not in data and "base_model_relation" not in data
    assert data["language"] == "zh" and data["widget"]


def test_the_report_holds_no_absolute_path_unless_asked(demo_checkpoint, tmp_path, capsys):
    folder = tmp_path / "out" / "hf"
    assert main(["convert", str(demo_checkpoint), str(folder), "--no-progress", "--license", "mit"]) == 0
    report = read_report(folder)
    assert not [s for s in strings(report) if s.startswith("/") or str(tmp_path) in s]
    assert report["output_dir"] == "hf" and report["paths"] == "relative"
    assert recorded_source(folder, report) == demo_checkpoint
    assert str(tmp_path) not in (folder / "README.md").read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["convert", str(demo_checkpoint), str(tmp_path / "abs"), "--no-progress", "--record-paths"]) == 0
    recorded = read_report(tmp_path / "abs")
    assert recorded["source"] == str(demo_checkpoint) and recorded["paths"] == "absolute"
    assert recorded_source(tmp_path / "abs", recorded) == demo_checkpoint


def test_a_folder_moved_with_its_checkpoint_still_finds_it(demo_checkpoint, tmp_path):
    convert_checkpoint(demo_checkpoint, demo_checkpoint.parent / "hf")
    moved = tmp_path / "elsewhere"
    shutil.move(demo_checkpoint.parent, moved)
    assert recorded_source(moved / "hf", read_report(moved / "hf")) == moved / demo_checkpoint.name
    assert converted_from(moved / "hf") == str(moved / demo_checkpoint.name)


def test_readers_take_the_new_form_and_older_folders_absolute_paths(demo_checkpoint, tmp_path):
    (first,) = convert_epochs([demo_checkpoint], tmp_path / "into")
    assert converted_from(first.folder) == str(demo_checkpoint)
    (again,) = convert_epochs([demo_checkpoint], tmp_path / "into")
    assert again.outcome == UP_TO_DATE
    report_file = Path(first.folder) / "conversion_report.json"
    old = json.loads(report_file.read_text(encoding="utf-8"))
    old.pop("paths")
    old["source"], old["output_dir"] = str(demo_checkpoint), str(first.folder)  # as folders were written before
    report_file.write_text(json.dumps(old), encoding="utf-8")
    assert converted_from(first.folder) == str(demo_checkpoint)
    (still,) = convert_epochs([demo_checkpoint], tmp_path / "into")
    assert still.outcome == UP_TO_DATE

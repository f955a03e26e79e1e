"""The command line: both flag styles, reports, exit codes, one-paragraph errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import assert_model_holds, reload_strictly
from original import REDUCED, build_model, save, training_checkpoint

from chclip_convert import load_checkpoint
from chclip_convert.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    model = build_model(REDUCED["ViT-L-14-336"], seed=8)
    return save(training_checkpoint(model), tmp_path_factory.mktemp("cli") / "epoch_3.pt")


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "chclip_convert", *args], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_module_entry_point_converts_and_prints_summary(checkpoint, tmp_path):
    result = run_module(str(checkpoint), str(tmp_path / "hf"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 0, result.stderr
    assert "custom" in result.stdout and "336 px" in result.stdout
    assert "writing weights" in result.stderr  # the progress bar
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["report"]["ok"] is True
    assert report["architecture"]["image_size"] == 336
    model = reload_strictly(tmp_path / "hf")
    assert model.config.vision_config.image_size == 336
    assert_model_holds(model, load_checkpoint(checkpoint).state_dict)


def test_legacy_flags_with_a_config_path(checkpoint, tmp_path):
    assert main([str(checkpoint), str(tmp_path / "first"), "--no-progress"]) == 0
    legacy = [
        "--checkpoint_path",
        str(checkpoint),
        "--pytorch_dump_folder_path",
        str(tmp_path / "second"),
        "--config_path",
        str(tmp_path / "first" / "config.json"),
        "--no-progress",
    ]
    assert main(legacy) == 0
    source = load_checkpoint(checkpoint).state_dict
    for folder in ("first", "second"):
        assert_model_holds(reload_strictly(tmp_path / folder), source)


def test_contradicting_config_fails_with_one_paragraph(checkpoint, tmp_path):
    assert main([str(checkpoint), str(tmp_path / "ok"), "--no-progress"]) == 0
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    config["vision_config"]["image_size"] = 224
    (tmp_path / "wrong.json").write_text(json.dumps(config))
    result = run_module(str(checkpoint), str(tmp_path / "bad"), "--config", str(tmp_path / "wrong.json"))
    assert result.returncode == 1
    assert "vision_config.image_size = 224" in result.stderr and "it must be 336" in result.stderr
    assert str(checkpoint) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()


def test_unused_key_is_fatal_unless_no_strict(checkpoint, tmp_path):
    state = dict(load_checkpoint(checkpoint).state_dict)
    state["visual.head.weight"] = torch.zeros(4)
    extra = save({"state_dict": state}, tmp_path / "extra.pt")
    result = run_module(str(extra), str(tmp_path / "strict"), "--report", str(tmp_path / "r.json"))
    assert result.returncode == 1 and "visual.head.weight" in result.stderr and "Traceback" not in result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and report["report"]["problems"]["unused"] == ["visual.head.weight"]
    assert main([str(extra), str(tmp_path / "lenient"), "--no-strict", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "lenient" / "conversion_report.json").read_text())
    assert any("dropped" in note for note in saved["report"]["notes"])


def test_missing_arguments_and_files(tmp_path):
    assert run_module().returncode == 2
    result = run_module(str(tmp_path / "nope.pt"), str(tmp_path / "out"))
    assert result.returncode == 1 and "nope.pt: no such file" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unwritable_report_path_is_an_error_not_a_traceback(checkpoint, tmp_path):
    (tmp_path / "taken").write_text("a file where the report's folder should be")
    result = run_module(str(checkpoint), str(tmp_path / "hf"), "--report", str(tmp_path / "taken" / "r.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot write the report" in result.stderr and str(tmp_path / "taken" / "r.json") in result.stderr

"""Provenance: the weights digest recorded by a conversion is recomputed from the checkpoint alone; it
follows the weights, not the optimizer state; the whole file's SHA-256 only when asked for. The checkpoint is
an epoch of the demo's fine-tuning run (cn_clip's training layout, with AdamW state): what is digested does not
depend on the model's size."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading

import pytest
import torch
from support.original import save

from chclip_convert import MappingError, convert_checkpoint
from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import write_demo_run
from chclip_convert.conversion.provenance import ALGORITHM, CHECK_COMMAND, source_weights_digest
from chclip_convert.conversion.provenance import main as provenance_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A training checkpoint with optimizer state (with its vocab.txt beside it), and the dict it holds."""
    _, epochs = write_demo_run(tmp_path_factory.mktemp("provenance"))
    data = torch.load(epochs[0], weights_only=True)
    assert data["optimizer"]["state"] and all(key.startswith("module.") for key in data["state_dict"])
    return epochs[0], data


def test_the_recorded_digest_is_recomputed_from_the_checkpoint(trained, tmp_path):
    path, _ = trained
    summary = convert_checkpoint(path, tmp_path / "hf")
    recomputed = source_weights_digest(path)
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    card = (tmp_path / "hf" / "README.md").read_text()
    assert summary.source_weights_digest == recomputed == report["source_weights_digest"]
    assert report["source_weights_digest_algorithm"] == ALGORITHM
    assert report["source_sha256"] is None and summary.source_sha256 is None
    assert recomputed in card and f"{CHECK_COMMAND} {path.name}" in card and "source_weights_digest(" in card


def test_one_weight_byte_changes_the_digest_and_the_optimizer_state_does_not(trained, tmp_path):
    path, data = trained
    digest = source_weights_digest(path)
    other_moments = {**data, "optimizer": {**data["optimizer"], "state": {0: {"exp_avg": torch.ones(3)}}}}
    assert source_weights_digest(save(other_moments, tmp_path / "moments.pt")) == digest
    unprefixed = {key.removeprefix("module."): value for key, value in data["state_dict"].items()}
    assert source_weights_digest(save(unprefixed, tmp_path / "bare.pt")) == digest
    state = {key: value.clone() for key, value in data["state_dict"].items()}
    state["module.visual.transformer.resblocks.1.mlp.c_fc.weight"].view(torch.uint8).view(-1)[7] ^= 1
    assert source_weights_digest(save({**data, "state_dict": state}, tmp_path / "edited.pt")) != digest


def test_file_sha256_only_when_asked(trained, tmp_path, capsys):
    path, _ = trained
    assert main([str(path), str(tmp_path / "hf"), "--no-progress", "--sha256"]) == 0
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"| file SHA-256 | {report['source_sha256']} |" in (tmp_path / "hf" / "README.md").read_text()
    assert provenance_main([str(path), "--sha256"]) == 0
    printed = capsys.readouterr().out
    assert f"source_weights_digest {report['source_weights_digest']}" in printed
    assert f"source_sha256 {report['source_sha256']}" in printed


def test_a_failed_conversion_leaves_no_thread_reading_the_file(trained, tmp_path):
    checkpoint, data = trained
    state = {**data["state_dict"], "module.visual.prompt_tokens": torch.zeros(4, 8)}
    # 128 MB of optimizer state: the whole-file hash is still reading when the conversion is
    # refused, which it is as soon as it has read the names.
    optimizer = {"state": {0: {"exp_avg": torch.zeros(2**25)}}, "param_groups": []}
    path = save({**data, "state_dict": state, "optimizer": optimizer}, tmp_path / "extra.pt")
    shutil.copy(checkpoint.with_name("vocab.txt"), tmp_path / "vocab.txt")
    with pytest.raises(MappingError, match=r"visual\.prompt_tokens"):  # refused for the tensor added above
        convert_checkpoint(path, tmp_path / "hf", file_sha256=True)
    assert not [thread for thread in threading.enumerate() if thread.name == "chclip-file-sha256"]


@pytest.mark.slow  # another Python process
def test_the_command_a_model_card_gives_prints_the_recorded_digest(trained, tmp_path):
    """Cards in published folders tell readers to run ``python -m chclip_convert.provenance CHECKPOINT``."""
    path, _ = trained
    card = (convert_checkpoint(path, tmp_path / "hf").output_dir / "README.md").read_text()
    command = CHECK_COMMAND.split()
    assert command[:2] == ["python", "-m"] and f"{CHECK_COMMAND} {path.name}" in card
    done = subprocess.run([sys.executable, *command[1:], str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["source_weights_digest", source_weights_digest(path)]

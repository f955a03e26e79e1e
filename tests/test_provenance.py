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

import blake3
import pytest
import torch
from support.original import save

from chclip_convert import MappingError, convert_checkpoint
from chclip_convert.cli.main import main
from chclip_convert.conversion import tensor_checks
from chclip_convert.conversion.demo import write_demo_run
from chclip_convert.conversion.provenance import (
    ALGORITHM,
    ALGORITHM_V1,
    CHECK_COMMAND,
    WeightsDigest,
    source_weights_digest,
    weights_digest,
)
from chclip_convert.conversion.provenance import main as provenance_main
from chclip_convert.conversion.state_dict import is_finite
from chclip_convert.conversion.tensor_checks import digest_and_check
from chclip_convert.verification.verify import verify_folder


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


def _lines_digest(state: dict[str, torch.Tensor], hash_bytes) -> str:
    """The module docstring's definition, written out with ``hash_bytes`` (bytes -> hex) in both places."""
    lines = []
    for name in WeightsDigest(state).keys:
        tensor = state[name]
        leaf = hash_bytes(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        lines.append(f"{name} {str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)} {leaf}\n")
    return hash_bytes("".join(lines).encode())


def test_both_algorithms_follow_their_written_definition(trained):
    _, data = trained
    state = {key.removeprefix("module."): value for key, value in data["state_dict"].items()}
    v2 = _lines_digest(state, lambda data: blake3.blake3(data).hexdigest())
    v1 = _lines_digest(state, lambda data: hashlib.blake2b(data, digest_size=32).hexdigest())
    assert weights_digest(state) == v2 and weights_digest(state, ALGORITHM_V1) == v1 != v2
    assert "v2" in ALGORITHM and "v1" in ALGORITHM_V1
    with pytest.raises(ValueError, match="unknown weights digest algorithm"):
        weights_digest(state, "md5 (chclip-convert v0)")


@pytest.mark.parametrize("algorithm", [ALGORITHM, ALGORITHM_V1])
@pytest.mark.parametrize("planted", [None, float("nan"), float("inf")])
def test_the_fused_pass_hashes_and_checks_every_chunk(algorithm, planted, monkeypatch):
    """Chunks of 1 KiB, so that a 10,001-element tensor has a short last chunk, where the NaN/Inf is planted."""
    monkeypatch.setattr(tensor_checks, "CHUNK_BYTES", 1024)
    tensor = torch.randn(10_001, generator=torch.Generator().manual_seed(0)).to(torch.float16)
    if planted is not None:
        tensor[-1] = planted
    name = "visual.transformer.resblocks.0.mlp.c_fc.bias"  # a name the digest covers
    whole, fused = WeightsDigest([name], algorithm), WeightsDigest([name], algorithm)
    whole.add(name, tensor)
    leaf, finite = digest_and_check(tensor, algorithm)
    fused.add_leaf(name, tensor, leaf)
    assert fused.keys == [name] and fused.hexdigest() == whole.hexdigest()
    assert finite == is_finite(tensor) == (planted is None)


def _unprefixed(state: dict) -> dict:
    return {key.removeprefix("module."): value for key, value in state.items()}


def _digest_check(report):
    return next(check for check in report.checks if check.name == "source weights digest")


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_folder_verifies_with_the_algorithm_it_records(version, trained, tmp_path, capsys):
    path, data = trained
    folder = convert_checkpoint(path, tmp_path / "hf").output_dir
    if version == "v1":
        _rewrite_report(folder, weights_digest(_unprefixed(data["state_dict"]), ALGORITHM_V1), ALGORITHM_V1)
    recorded = json.loads((folder / "conversion_report.json").read_text())
    assert recorded["source_weights_digest_algorithm"] == {"v2": ALGORITHM, "v1": ALGORITHM_V1}[version]
    assert _digest_check(verify_folder(path, folder, use_original=False)).passed
    assert provenance_main([str(path), "--folder", str(folder)]) == 0
    assert f"matches {folder}'s {recorded['source_weights_digest']}" in capsys.readouterr().out

    state = {key: value.clone() for key, value in data["state_dict"].items()}
    state["module.visual.transformer.resblocks.1.mlp.c_fc.weight"].view(torch.uint8).view(-1)[7] ^= 1
    edited = save({**data, "state_dict": state}, tmp_path / "edited.pt")
    check = _digest_check(verify_folder(edited, folder, use_original=False, vocab=folder / "vocab.txt"))
    assert not check.passed and recorded["source_weights_digest"] in check.value
    assert provenance_main([str(edited), "--folder", str(folder)]) == 1
    assert "differs from" in capsys.readouterr().out


def _rewrite_report(folder, digest: str, algorithm: str) -> None:
    report_path = folder / "conversion_report.json"
    report = json.loads(report_path.read_text())
    report.update(source_weights_digest=digest, source_weights_digest_algorithm=algorithm)
    report_path.write_text(json.dumps(report, indent=2))


def test_a_folder_recording_an_unknown_algorithm_fails_naming_the_field(trained, tmp_path):
    path, _ = trained
    folder = convert_checkpoint(path, tmp_path / "hf").output_dir
    _rewrite_report(folder, "0" * 64, "md5 (chclip-convert v0)")
    check = _digest_check(verify_folder(path, folder, use_original=False))
    assert not check.passed and "md5 (chclip-convert v0)" in check.value
    assert check.fields == ["conversion_report.json: source_weights_digest_algorithm"]
    assert provenance_main([str(path), "--folder", str(folder)]) == 1

"""Every kind of bad input or failing output: one clear message naming the file, the problem and what to do;
a non-zero exit from the CLI; a typed exception from the API; the message in the widget; the input unchanged;
no partial output left at the target."""

from __future__ import annotations

import errno
import html
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.files import tree_sha256
from support.original import REDUCED, build_model, save, tiny_rn50, training_checkpoint

from chclip_convert import (
    ArchitectureError,
    CheckpointReadError,
    ConfigMismatchError,
    ConversionError,
    MappingError,
    OutputError,
    UnsupportedCheckpointError,
    convert_checkpoint,
)
from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, write_demo_checkpoint
from chclip_convert.conversion.reverse import reverse_folder
from chclip_convert.files import output as output_module
from chclip_convert.files import safetensors_writer
from chclip_convert.files.archive import ArchiveWriter
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.notebook.converter import ConvertUI

MARKER = Path("/tmp/chclip-convert-pickle-ran")


class RunsCodeWhenUnpickled:
    """Unpickling this calls Path.touch(MARKER): a stand-in for any code an untrusted pickle could run."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


@dataclass
class Case:
    """Builds (input, output, extra CLI args) in a folder from a good checkpoint; what must be raised and said."""

    build: Callable[[Path, Path], tuple[Path, Path, list[str]]]
    error: type[ConversionError]
    says: str


def state_of(good: Path) -> dict[str, torch.Tensor]:
    return dict(load_checkpoint(good).state_dict)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _empty(work, good):
    return write(work / "empty.pt", b""), work / "out", []


def _random_bytes(work, good):
    return write(work / "random.pt", os.urandom(4096)), work / "out", []


def _truncated(work, good):
    return write(work / "truncated.pt", good.read_bytes()[: good.stat().st_size // 2]), work / "out", []


def _short_record(work, good):
    """A well-formed zip whose first storage record (the word embeddings') lost its second half."""
    state = state_of(good)
    first = "bert.embeddings.word_embeddings.weight"
    whole = save({"state_dict": {first: state.pop(first), **state}}, work / "whole.pt")
    with zipfile.ZipFile(whole) as source, zipfile.ZipFile(work / "short.pt", "w") as target:
        for info in source.infolist():
            data = source.read(info)
            data = data[: len(data) // 2] if info.filename.endswith("/data/0") else data
            aligned = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            padding = -(target.fp.tell() + 30 + len(info.filename) + 4) % 64  # torch aligns data to 64 bytes
            aligned.extra = b"FB" + padding.to_bytes(2, "little") + b"Z" * padding
            target.writestr(aligned, data)
    return work / "short.pt", work / "out", []


def _zip_not_torch(work, good):
    with zipfile.ZipFile(work / "notes.pt", "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")
    return work / "notes.pt", work / "out", []


def _code_in_pickle(work, good):
    torch.save({"state_dict": {"visual.proj": RunsCodeWhenUnpickled()}}, work / "evil.pt")
    return work / "evil.pt", work / "out", []


def _openai_clip(work, good):
    state = {
        "token_embedding.weight": torch.zeros(8, 4),
        "transformer.resblocks.0.attn.in_proj_weight": torch.zeros(12, 4),
        "visual.conv1.weight": torch.zeros(4, 3, 2, 2),
        "visual.proj": torch.zeros(4, 4),
    }
    return save(state, work / "openai_clip.pt"), work / "out", []


def _bert_only(work, good):
    state = {k: v for k, v in state_of(good).items() if k.startswith("bert.")}
    return save(state, work / "bert.pt"), work / "out", []


def _rn50(work, good):
    model = tiny_rn50()
    return save(training_checkpoint(model), work / "clip_cn_rn50.pt"), work / "out", []


def _converted_folder(work, good):
    convert_checkpoint(good, work / "already")
    return work / "already", work / "out", []


def _safetensors_file(work, good):
    save_file({"logit_scale": torch.ones(())}, str(work / "model.safetensors"))
    return work / "model.safetensors", work / "out", []


def _missing_tensor(work, good):
    state = state_of(good)
    del state["visual.transformer.resblocks.0.mlp.c_fc.bias"]
    return save(state, work / "missing.pt"), work / "out", []


def _extra_tensor(work, good):
    state = state_of(good)
    state["visual.prompt_tokens"] = torch.zeros(4, 128)
    return save(state, work / "extra.pt"), work / "out", []


def _wrong_shape(work, good):
    state = state_of(good)
    state["bert.encoder.layer.1.output.LayerNorm.bias"] = torch.zeros(100)
    return save(state, work / "shape.pt"), work / "out", []


def _layer_gap(work, good):
    state = {k.replace("resblocks.1.", "resblocks.2."): v for k, v in state_of(good).items()}
    return save(state, work / "gap.pt"), work / "out", []


def _contradicting_config(work, good):
    convert_checkpoint(good, work / "reference")
    config = (work / "reference" / "config.json").read_text().replace('"patch_size": 16', '"patch_size": 32')
    (work / "config.json").write_text(config)
    return good, work / "out", ["--config", str(work / "config.json")]


def _output_not_empty(work, good):
    (work / "out").mkdir()
    (work / "out" / "notes.txt").write_text("mine")
    return good, work / "out", []


def _output_is_file(work, good):
    return good, write(work / "out", b"a file"), []


def _output_is_input(work, good):
    return good, good, []


def _output_holds_input(work, good):
    return good, good.parent, ["--overwrite"]


CASES = {
    "empty file": Case(_empty, CheckpointReadError, "empty (0 bytes)"),
    "random bytes": Case(_random_bytes, CheckpointReadError, "is not a PyTorch checkpoint"),
    "truncated checkpoint": Case(_truncated, CheckpointReadError, "truncated or corrupt"),
    "storage record cut short": Case(_short_record, CheckpointReadError, "bert.embeddings.word_embeddings.weight"),
    "zip that is not torch": Case(_zip_not_torch, CheckpointReadError, "no data.pkl record"),
    "pickle that would run code": Case(_code_in_pickle, CheckpointReadError, "nothing from it was run"),
    "OpenAI CLIP / open_clip": Case(_openai_clip, UnsupportedCheckpointError, "OpenAI CLIP / open_clip"),
    "BERT-only state dict": Case(_bert_only, UnsupportedCheckpointError, "BERT-only"),
    "Chinese-CLIP RN50": Case(_rn50, UnsupportedCheckpointError, "no ResNet vision tower"),
    "converted folder as input": Case(
        _converted_folder, UnsupportedCheckpointError, "chclip-convert reverse FOLDER OUTPUT.pt"
    ),
    "safetensors file as input": Case(_safetensors_file, UnsupportedCheckpointError, "already converted"),
    "missing tensor": Case(_missing_tensor, MappingError, "layers.0.mlp.fc1.bias"),
    "extra tensor": Case(_extra_tensor, MappingError, "visual.prompt_tokens"),
    "wrong-shaped tensor": Case(_wrong_shape, MappingError, f"got [100], expected [{DEMO_ARCHITECTURE.text_hidden}]"),
    "layer numbering gap": Case(_layer_gap, ArchitectureError, "missing [1]"),
    "config contradicting weights": Case(_contradicting_config, ConfigMismatchError, "patch_size = 32"),
    "output exists": Case(_output_not_empty, OutputError, "not empty"),
    "output is a file": Case(_output_is_file, OutputError, "is a file"),
    "output is the input": Case(_output_is_input, OutputError, "input checkpoint"),
    "output folder holds the input": Case(_output_holds_input, OutputError, "input checkpoint"),
}


@pytest.fixture
def good(tmp_path) -> Path:
    return write_demo_checkpoint(tmp_path / "run")


def assert_nothing_written(output: Path, before: str | None) -> None:
    assert tree_sha256(output) == before, "the output location changed"
    assert not _partials(output), "a partial folder was left"


def check_case(case: Case, source: Path, output: Path, extra: list[str], capsys) -> None:
    source_hash, output_hash = tree_sha256(source), tree_sha256(output)
    options = {"config": extra[1]} if extra[:1] == ["--config"] else {"overwrite": "--overwrite" in extra}
    with pytest.raises(case.error) as caught:
        convert_checkpoint(source, output, **options)
    message = str(caught.value)
    assert case.says in message and str(caught.value.path) in message
    assert main([str(source), str(output), "--no-progress", *extra]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and case.says in stderr and "Traceback" not in stderr
    ui = ConvertUI(str(source), str(output))
    ui.overwrite.value = "--overwrite" in extra
    ui.config.value = options.get("config", "")
    if ui.convert_button.disabled:  # refused before converting: the message sits under its field
        shown = ui.checkpoint_message.value + ui.output_message.value
    else:
        ui.convert_button.click()
        ui.wait()
        shown = ui.status.value
    assert html.escape(case.says) in shown, shown
    assert "Traceback" not in shown
    assert tree_sha256(source) == source_hash, "the input changed"
    assert_nothing_written(output, output_hash)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, good, tmp_path, capsys):
    MARKER.unlink(missing_ok=True)
    source, output, extra = CASES[name].build(tmp_path, good)
    check_case(CASES[name], source, output, extra, capsys)
    assert not MARKER.exists(), "code stored in the checkpoint ran"


def test_unwritable_output_folder(good, tmp_path, capsys, monkeypatch):
    # Tests run as root here, which ignores permission bits; the permission check itself is simulated.
    monkeypatch.setattr(output_module.os, "access", lambda path, mode: False)
    check_case(Case(None, OutputError, "permission denied"), good, tmp_path / "locked" / "out", [], capsys)


def test_full_disk_while_writing_weights(good, tmp_path, capsys, monkeypatch):
    real = safetensors_writer.raw_bytes
    calls = {"n": 0}

    def fill_disk_after_a_few(tensor):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(28, "No space left on device")
        return real(tensor)

    monkeypatch.setattr(safetensors_writer, "raw_bytes", fill_disk_after_a_few)
    check_case(Case(None, OutputError, "No space left on device"), good, tmp_path / "out", [], capsys)


def test_nan_and_inf_are_converted_with_a_warning_naming_them(good, tmp_path, capsys):
    state = state_of(good)
    state["visual.ln_post.weight"][3] = float("nan")
    state["bert.embeddings.LayerNorm.bias"][0] = float("inf")
    source = save(state, tmp_path / "nan.pt")
    with pytest.warns(UserWarning, match=r"2 tensor\(s\) hold NaN or Inf values: bert.embeddings.LayerNorm.bias, "):
        summary = convert_checkpoint(source, tmp_path / "out")
    assert any("visual.ln_post.weight" in warning for warning in summary.warnings)
    assert main([str(source), str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "warning: 2 tensor(s) hold NaN or Inf" in capsys.readouterr().out


@pytest.mark.slow  # another Python process, killed while writing a reduced ViT-H-14
def test_killed_while_writing_leaves_only_a_named_partial_folder_that_the_next_run_removes(tmp_path):
    model = build_model(REDUCED["ViT-H-14"], seed=2)  # ~360 MB of weights: writing takes a moment
    source = save(training_checkpoint(model), tmp_path / "big.pt")
    before = tree_sha256(source)
    output = tmp_path / "out"
    command = [sys.executable, "-m", "chclip_convert", str(source), str(output), "--no-progress"]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _partials(output, "model.safetensors") and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the conversion finished before it could be interrupted"
    assert not output.exists() and len(_partials(output)) == 1
    assert tree_sha256(source) == before
    convert_checkpoint(source, output)  # the killed writer is gone, so its partial folder is removed
    assert (output / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.pt", "out"], "a partial folder or lock was left"


def _partials(output: Path, holding: str | None = None) -> list[Path]:
    """The temporary folders of writers of ``output`` (holding the file ``holding``, if given)."""
    found = output.parent.glob(output.name + ".chclip-partial*")
    return [p for p in found if holding is None or (p / holding).exists()]


def _reverse_case(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path, Path], Path]:
    """Builds a converted folder from the good checkpoint with its weights edited by ``edit``."""

    def build(work: Path, good: Path) -> Path:
        folder = convert_checkpoint(good, work / "hf").output_dir
        state = load_file(str(folder / "model.safetensors"))
        edit(state)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return folder

    return build


K_PROJ = "vision_model.encoder.layers.0.self_attn.k_proj.weight"
WIDTH, PROJECTION = DEMO_ARCHITECTURE.vision_width, DEMO_ARCHITECTURE.projection_dim
REVERSE_CASES = {
    "k_proj of the wrong width": (
        _reverse_case(lambda state: state.update({K_PROJ: torch.zeros(WIDTH, WIDTH + 1)})),
        f"{K_PROJ}: got [{WIDTH}, {WIDTH + 1}], expected [{WIDTH}, {WIDTH}]",
    ),
    "1-d visual_projection.weight": (
        _reverse_case(lambda state: state.update({"visual_projection.weight": torch.zeros(PROJECTION)})),
        f"visual_projection.weight: got [{PROJECTION}], expected [{PROJECTION}, {WIDTH}]",
    ),
    "missing tensor": (
        _reverse_case(lambda state: state.pop("vision_model.encoder.layers.1.mlp.fc2.bias")),
        f"vision_model.encoder.layers.1.mlp.fc2.bias: expected shape [{WIDTH}]",
    ),
    "unknown tensor": (
        _reverse_case(lambda state: state.update({"vision_model.adapter.weight": torch.zeros(2, 2)})),
        "    vision_model.adapter.weight",
    ),
}


@pytest.mark.parametrize("name", list(REVERSE_CASES))
def test_bad_folder_to_reverse(name, good, tmp_path, capsys):
    build, says = REVERSE_CASES[name]
    folder, output = build(tmp_path, good), tmp_path / "back.pt"
    before = tree_sha256(folder)
    with pytest.raises(MappingError) as caught:
        reverse_folder(folder, output)
    assert says in str(caught.value) and str(folder) in str(caught.value)
    assert caught.value.report is not None and not caught.value.report.ok
    assert main(["reverse", str(folder), str(output)]) == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("error: ") and says in stderr and "Traceback" not in stderr
    assert tree_sha256(folder) == before, "the folder changed"
    assert not output.exists() and not list(tmp_path.glob("*.chclip-partial*")), "something was written"


def test_reverse_never_writes_into_its_folder_and_cleans_up_a_failed_write(good, tmp_path, capsys, monkeypatch):
    folder = convert_checkpoint(good, tmp_path / "hf").output_dir
    before = tree_sha256(folder)
    for inside in (folder / "model.safetensors", folder / "back.pt"):
        with pytest.raises(OutputError, match="inside the folder being reversed"):
            reverse_folder(folder, inside, overwrite=True)
    assert tree_sha256(folder) == before, "the folder changed"

    def failing_disk(writer, *parts):  # part of the file is written, then the disk reports an I/O error
        writer.stream.write(b"half a checkpoint")
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(ArchiveWriter, "_put", failing_disk)
    assert main(["reverse", str(folder), str(tmp_path / "back.pt")]) == 1
    stderr = capsys.readouterr().err
    # an I/O error in the system's words (a full disk says "No space left": test_writers.py)
    assert f"writing failed: {os.strerror(errno.EIO)}; nothing was changed" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "back.pt").exists() and not list(tmp_path.glob("*.chclip-partial*"))


def test_a_missing_tensor_stops_the_conversion_before_any_weight_is_written(good, tmp_path):
    """The table's own list of targets shows a missing tensor without transformers' model: no byte is written."""
    state = state_of(good)
    del state["visual.transformer.resblocks.1.mlp.c_proj.bias"]
    source, written = save(state, tmp_path / "missing.pt"), []
    with pytest.raises(MappingError) as caught:
        convert_checkpoint(source, tmp_path / "out", progress=written.append)
    assert "vision_model.encoder.layers.1.mlp.fc2.bias" in str(caught.value)
    assert [event for event in written if event.counted] == [] and not (tmp_path / "out").exists()

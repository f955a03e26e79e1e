"""Folders broken on purpose, one thing at a time: verification fails and names the key, field or entry at
fault. Intact folders (exact, float16, sharded, flash-attention source) pass.

The source is the embedded demo (twelve narrow layers a tower, about a million parameters), so a verification
takes a fraction of a second; verification of reduced models at full width is in tests/test_reverse_verify.py.

Each break runs where its verdict can differ, not in every combination: 24 verifications, where the full matrix
of 16 breaks × 2 source layouts × cn_clip on/off made 64.

- Breaks of the weights (missing, unexpected, wrong shape, wrong dtype, altered bytes): in both layouts, for the
  folder's tensors are checked against what the table maps from the source, and a flash-attention source maps
  through other rules (fused Wqkv). With cn_clip, so that the model comparison meets folders that do not reload
  or whose shapes differ; without it the same weights check runs and nothing else reads the tensors.
- Breaks of the other files (config, preprocessor, tokenizer, vocabulary, conversion record): once, standard
  layout, without cn_clip. The check that names them reads only the folder's files and the reference, alike for
  either layout and with or without cn_clip, which adds the model comparison and nothing to these checks.
- Three of those also with cn_clip: the two that change the folder's token ids (tokenizer.json's entries,
  lower-casing), which are then compared with cn_clip's own tokenizer instead of a BertTokenizer over the
  reference vocabulary; and the garbled tokenizer.json, with which the folder cannot run, which the model
  comparison must report rather than fail on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from support.original import save

from chclip_convert import convert_checkpoint
from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, write_demo_checkpoint
from chclip_convert.files.assets import read_vocab
from chclip_convert.verification.verify import verify_folder

LAYOUTS = ("standard", "flash-attention")
WEIGHTS = "weights equal source"
CONFIG = "config.json matches the checkpoint"
PREPROCESSOR = "preprocessor_config.json matches cn_clip"
ROUND_TRIP_BACK = "round trip original → transformers → original"
CORE_CHECKS = [
    WEIGHTS,
    "folder reloads",
    CONFIG,
    PREPROCESSOR,
    "vocab.txt equals reference",
    "tokenizer.json equals reference",
    "tokenizer_config.json matches the reference",
    "token ids equal",
    "round trip transformers → original → transformers",
    ROUND_TRIP_BACK,
    "source weights digest",
]
OUTPUT_CHECKS = [
    "pixel max abs diff",
    "image max abs diff (relative)",
    "text max abs diff (relative)",
    "logits max abs diff (relative)",
    "image feature min cosine",
    "text feature min cosine",
    "top-1 agrees",
]
# Another vision head count than the demo's one: the width (64) divides it, so a folder that states it still loads
# and runs; only config.json, checked against the weights and the options given, can show it.
OTHER_HEADS = 2
SHARD = "1MB"  # the demo's weights are about 4 MB: several shards


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The demo checkpoint as training saves it, and the same tensors as a flash-attention model's raw dump."""
    from cn_clip.clip.model import convert_state_dict as to_flash_layout

    work = tmp_path_factory.mktemp("breaks")
    standard = write_demo_checkpoint(work / "standard")
    flash = to_flash_layout(torch.load(standard, weights_only=True)["state_dict"])
    return {
        "standard": standard,
        "flash-attention": save({"state_dict": flash, "epoch": 1}, work / "flash" / "flash.pt"),
    }


@pytest.fixture(scope="module")
def vocab(sources) -> Path:
    """The reference vocabulary: the demo's, written beside its checkpoint."""
    return sources["standard"].with_name("vocab.txt")


@pytest.fixture(scope="module")
def intact(sources, vocab, tmp_path_factory) -> dict[str, Path]:
    """Folders converted from the sources: each layout as it is, and the standard one cast and sharded."""
    work = tmp_path_factory.mktemp("intact")
    folders = {
        layout: convert_checkpoint(path, work / layout, vocab=vocab).output_dir for layout, path in sources.items()
    }
    standard = sources["standard"]
    folders["float16"] = convert_checkpoint(standard, work / "float16", vocab=vocab, dtype="float16").output_dir
    folders["sharded"] = convert_checkpoint(standard, work / "sharded", vocab=vocab, max_shard_size=SHARD).output_dir
    return folders


def broken_copy(folder: Path, target: Path) -> Path:
    """A copy of ``folder`` made of hard links: breaks must replace files (``replace_*``), never write into them."""
    shutil.copytree(folder, target, copy_function=os.link)
    return target


def replace_weights(folder: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_file(str(folder / "model.safetensors"))
    edit(state)
    (folder / "model.safetensors").unlink()
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def replace_json(folder: Path, name: str, edit: Callable[[dict], None]) -> None:
    data = json.loads((folder / name).read_text(encoding="utf-8"))
    edit(data)
    (folder / name).unlink()
    (folder / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def swapped_ids(folder: Path) -> tuple[int, int]:
    """The ids of two tokens the sample captions use ("一只猫", "一只狗"), so swapping them changes token ids."""
    vocab = read_vocab(folder / "vocab.txt")
    return vocab["猫"], vocab["狗"]


def _missing_tensor(folder):
    key = "vision_model.encoder.layers.1.mlp.fc2.bias"
    replace_weights(folder, lambda state: state.pop(key))
    return key


def _unexpected_tensor(folder):
    key = "vision_model.encoder.layers.0.adapter.weight"
    replace_weights(folder, lambda state: state.update({key: torch.zeros(4, DEMO_ARCHITECTURE.vision_width)}))
    return key


def _wrong_shape(folder):
    key = "vision_model.post_layernorm.weight"
    replace_weights(folder, lambda state: state.update({key: torch.ones(state[key].numel() + 1)}))
    return key


def _wrong_dtype(folder):
    key = "text_model.embeddings.LayerNorm.weight"
    replace_weights(folder, lambda state: state.update({key: state[key].half()}))
    return key


def _altered_bytes(folder):
    key = "text_model.encoder.layer.0.attention.self.query.weight"

    def nudge(state):
        state[key] = state[key].clone()
        state[key][0, 0] += 1e-3

    replace_weights(folder, nudge)
    return key


def _altered_vocab_txt(folder):
    cat, dog = swapped_ids(folder)
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    lines[cat], lines[dog] = lines[dog], lines[cat]
    (folder / "vocab.txt").unlink()
    (folder / "vocab.txt").write_text("\n".join(lines), encoding="utf-8")
    return f"id {min(cat, dog)}"


def _altered_tokenizer_json(folder):
    cat, dog = swapped_ids(folder)

    def swap(data):
        vocab = data["model"]["vocab"]
        vocab["猫"], vocab["狗"] = dog, cat

    replace_json(folder, "tokenizer.json", swap)
    return f"id {min(cat, dog)}"


def _wrong_heads(folder):
    replace_json(folder, "config.json", lambda data: data["vision_config"].update(num_attention_heads=OTHER_HEADS))
    return "vision_config.num_attention_heads"


def _architectures_missing(folder):
    replace_json(folder, "config.json", lambda data: data.pop("architectures"))
    return "architectures"


def _architectures_wrong(folder):
    replace_json(folder, "config.json", lambda data: data.update(architectures=["CLIPModel"]))
    return "architectures"


def _another_mean(folder):
    replace_json(folder, "preprocessor_config.json", lambda data: data.update(image_mean=[0.5, 0.5, 0.5]))
    return "image_mean"


def _center_crop(folder):
    crop = {"do_center_crop": True, "size": {"shortest_edge": DEMO_ARCHITECTURE.image_size}}
    replace_json(folder, "preprocessor_config.json", lambda data: data.update(crop))
    return "do_center_crop"


def _unreadable_conversion_report(folder):
    (folder / "conversion_report.json").unlink()
    (folder / "conversion_report.json").write_text("{not json", encoding="utf-8")
    return "conversion_report.json"


def _garbled_tokenizer_json(folder):
    replace_json(folder, "tokenizer.json", lambda data: data.update(model="x"))
    return "tokenizer.json"


def _no_lower_casing(folder):
    replace_json(folder, "tokenizer_config.json", lambda data: data.update(do_lower_case=False))
    return "do_lower_case"


def _digest_of_another_file(folder):
    replace_json(folder, "conversion_report.json", lambda data: data.update(source_weights_digest="0" * 64))
    return "source_weights_digest"


@dataclass(frozen=True)
class Break:
    """Breaks a folder in place and returns what the failing ``check`` must name."""

    apply: Callable[[Path], str]
    check: str


BREAKS = {
    "missing tensor": Break(_missing_tensor, WEIGHTS),
    "unexpected tensor": Break(_unexpected_tensor, WEIGHTS),
    "wrong-shaped tensor": Break(_wrong_shape, WEIGHTS),
    "wrong dtype": Break(_wrong_dtype, WEIGHTS),
    "altered bytes": Break(_altered_bytes, WEIGHTS),
    "altered vocab.txt": Break(_altered_vocab_txt, "vocab.txt equals reference"),
    "altered tokenizer.json": Break(_altered_tokenizer_json, "tokenizer.json equals reference"),
    "wrong num_attention_heads": Break(_wrong_heads, CONFIG),
    "architectures missing": Break(_architectures_missing, CONFIG),
    "architectures wrong": Break(_architectures_wrong, CONFIG),
    "another mean": Break(_another_mean, PREPROCESSOR),
    "center crop": Break(_center_crop, PREPROCESSOR),
    "garbled tokenizer.json": Break(_garbled_tokenizer_json, "tokenizer.json equals reference"),
    "no lower-casing": Break(_no_lower_casing, "tokenizer_config.json matches the reference"),
    "digest of another file": Break(_digest_of_another_file, "source weights digest"),
    "unreadable conversion_report.json": Break(_unreadable_conversion_report, "source weights digest"),
}
# Breaks that a strict reload must name too (transformers would otherwise fill or drop the key silently).
RELOAD_NAMES = {"missing tensor", "unexpected tensor", "wrong-shaped tensor"}
# Breaks of the tensors: judged against what the table maps from the source, whose layout changes the rules.
OF_THE_WEIGHTS = {name for name, brk in BREAKS.items() if brk.check == WEIGHTS}
# Breaks that change the ids the folder's tokenizer gives: checked against cn_clip's tokenizer, or without cn_clip
# against a BertTokenizer over the reference vocabulary.
OF_THE_TOKEN_IDS = {"altered tokenizer.json", "no lower-casing"}
# Breaks of the files that cn_clip's side sees differently: the token ids above, and a folder that cannot run.
ALSO_WITH_CN_CLIP = OF_THE_TOKEN_IDS | {"garbled tokenizer.json"}


def where_each_break_can_differ():
    """(break, layout, cn_clip) for each run the module docstring explains: 24 verifications in all."""
    for name in BREAKS:
        if name in OF_THE_WEIGHTS:
            yield from (pytest.param(name, layout, True, id=f"{name}-{layout}-cn_clip") for layout in LAYOUTS)
        else:
            yield pytest.param(name, "standard", False, id=f"{name}-no-cn_clip")
            if name in ALSO_WITH_CN_CLIP:
                yield pytest.param(name, "standard", True, id=f"{name}-cn_clip")


@pytest.mark.parametrize(("name", "layout", "original"), list(where_each_break_can_differ()))
def test_verify_fails_and_names_each_break(name, layout, original, sources, vocab, intact, tmp_path):
    folder = broken_copy(intact[layout], tmp_path / "broken")
    named = BREAKS[name].apply(folder)
    report = verify_folder(sources[layout], folder, use_original=original, vocab=vocab)
    assert not report.ok and report.original_available == original
    failed = {check.name: check for check in report.checks if not check.passed}
    check = failed.get(BREAKS[name].check)
    assert check is not None, report.to_text()
    assert named in check.value, report.to_text()
    assert any(named in item for item in check.keys + check.fields), check
    if name in RELOAD_NAMES:
        assert named in failed["folder reloads"].value
    if name in OF_THE_TOKEN_IDS:  # the ids the folder's tokenizer gives change too
        assert "token ids equal" in failed
    assert "Verification FAILED." in report.to_text()


# Each intact folder where its verdict can differ: every check in its order with cn_clip and without it (exact);
# the original model run from a flash-attention source and judged within the float16 tolerances (cn_clip); the
# weights read through a shard index, which reads alike either way (without cn_clip).
INTACT = [("exact", True), ("exact", False), ("flash-attention", True), ("float16", True), ("sharded", False)]


@pytest.mark.parametrize(
    ("kind", "original"), INTACT, ids=[f"{kind}-{'cn_clip' if with_ else 'no-cn_clip'}" for kind, with_ in INTACT]
)
def test_intact_folders_pass(kind, original, sources, vocab, intact):
    layout = "flash-attention" if kind == "flash-attention" else "standard"
    folder = intact["standard" if kind == "exact" else kind]
    if kind == "sharded":
        assert len(list(folder.glob("model-*.safetensors"))) > 1
    report = verify_folder(sources[layout], folder, use_original=original, vocab=vocab)
    assert report.ok, report.to_text()
    assert report.precision == ("float16" if kind == "float16" else "exact")
    expected = [name for name in CORE_CHECKS if not (layout == "flash-attention" and name == ROUND_TRIP_BACK)]
    assert [check.name for check in report.checks] == expected + (OUTPUT_CHECKS if original else [])


def test_head_overrides_are_never_taken_from_the_folder(sources, vocab, tmp_path):
    """Head counts are invisible in the weights, so a count the folder records cannot vouch for itself: a folder
    converted with --vision-heads 2 (the demo has one head a tower) fails, naming the field, until verify is given
    2 too, and the original model is then built with two heads as well (the config check itself does not depend
    on cn_clip)."""
    original = True
    checkpoint, heads = sources["standard"], DEMO_ARCHITECTURE.vision_heads
    folder = convert_checkpoint(checkpoint, tmp_path / "hf", vocab=vocab, vision_heads=OTHER_HEADS).output_dir
    assert json.loads((folder / "conversion_report.json").read_text())["overrides"]["vision_heads"] == OTHER_HEADS
    report = verify_folder(checkpoint, folder, use_original=original, vocab=vocab)
    failed = {check.name: check for check in report.checks if not check.passed}
    assert f"vision_config.num_attention_heads: folder {OTHER_HEADS}, expected {heads}" in failed[CONFIG].value
    assert "--vision-heads" in report.to_text()
    report = verify_folder(checkpoint, folder, use_original=original, vocab=vocab, vision_heads=OTHER_HEADS)
    assert report.ok, report.to_text()
    replace_json(folder, "config.json", lambda data: data["vision_config"].update(num_attention_heads=heads))
    report = verify_folder(checkpoint, folder, use_original=original, vocab=vocab, vision_heads=OTHER_HEADS)
    failed = {check.name: check for check in report.checks if not check.passed}
    assert f"vision_config.num_attention_heads: folder {heads}, expected {OTHER_HEADS}" in failed[CONFIG].value


@pytest.mark.slow  # another Python process
def test_verify_cli_without_cn_clip_names_the_field_and_writes_the_verdict(sources, vocab, intact, tmp_path):
    folder = broken_copy(intact["standard"], tmp_path / "broken")
    field = _wrong_heads(folder)
    hide_cn_clip = (
        "import sys; sys.modules['cn_clip'] = None; from chclip_convert.cli.main import main; sys.exit(main())"
    )
    command = [sys.executable, "-c", hide_cn_clip, "verify", str(sources["standard"]), str(folder)]
    command += ["--vocab", str(vocab), "--report", str(tmp_path / "verify.json")]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 3, result.stderr
    assert "cn_clip: not installed" in result.stdout and "Traceback" not in result.stderr
    assert f"FAIL  {CONFIG}" in result.stdout and field in result.stdout
    verdict = json.loads((tmp_path / "verify.json").read_text())
    assert verdict["ok"] is False and verdict["original_available"] is False
    failed = [check for check in verdict["checks"] if not check["passed"]]
    assert [check["name"] for check in failed] == [CONFIG]
    assert failed[0]["fields"] == [field] and failed[0]["requirement"]


def test_convert_with_verify_writes_the_verdict_beside_the_summary(sources, vocab, tmp_path, capsys):
    report = tmp_path / "report.json"
    command = ["convert", str(sources["standard"]), str(tmp_path / "hf"), "--vocab", str(vocab), "--no-progress"]
    assert main([*command, "--verify", "--report", str(report)]) == 0
    written = json.loads(report.read_text())
    assert written["report"]["ok"] and written["verification"]["ok"]
    assert {check["name"] for check in written["verification"]["checks"]} >= {WEIGHTS, CONFIG, PREPROCESSOR}
    assert "Verified: all checks pass." in capsys.readouterr().out


def test_a_reference_vocabulary_inside_the_folder_is_refused(sources, intact, tmp_path):
    folder = broken_copy(intact["standard"], tmp_path / "hf")
    report = verify_folder(sources["standard"], folder, use_original=False, vocab=folder / "vocab.txt")
    failed = {check.name: check for check in report.checks if not check.passed}
    assert "pass --vocab" in failed["tokenizer equals reference"].value
    assert "lies in the folder under test" in report.to_text()


def test_sharded_folders_are_read_through_their_index(sources, vocab, intact, tmp_path):
    """As transformers loads them: files the index does not name are not part of the model, and a tensor held
    by two shards is an error naming it rather than one copy silently winning."""
    from chclip_convert import CheckpointReadError
    from chclip_convert.files.folder import load_folder_state

    folder = broken_copy(intact["sharded"], tmp_path / "hf")
    intact = load_folder_state(folder)
    first, second = sorted(folder.glob("model-*.safetensors"))[:2]
    stray = load_file(str(first))
    save_file({key: torch.zeros_like(value) for key, value in stray.items()}, str(folder / "stray.safetensors"))
    assert load_folder_state(folder).keys() == intact.keys()
    assert verify_folder(sources["standard"], folder, use_original=False, vocab=vocab).ok
    repeated = next(iter(stray))
    second_with_repeat = {**load_file(str(second)), repeated: stray[repeated]}
    second.unlink()
    save_file(second_with_repeat, str(second), metadata={"format": "pt"})
    with pytest.raises(CheckpointReadError, match=f"repeats tensors another file holds: {repeated}"):
        load_folder_state(folder)

"""The written folder: exact bytes, dtypes, shards, tokenizer, image processor, model card, safety."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from support.converted import assert_model_holds, reload_strictly
from support.files import tree_sha256
from support.original import CAPTIONS, REDUCED, VOCAB, build_model, save, training_checkpoint
from transformers import ChineseCLIPProcessor

from chclip_convert import (
    ConversionError,
    MappingError,
    OutputError,
    convert_checkpoint,
    convert_state_dict,
)
from chclip_convert.files import assets as assets_module
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.files.folder import load_folder_state
from chclip_convert.verification.weight_check import compare_state


@pytest.fixture(scope="module")
def b16_checkpoint(tmp_path_factory) -> Path:
    model = build_model(REDUCED["ViT-B-16"], seed=21)
    return save(training_checkpoint(model, optimizer=True), tmp_path_factory.mktemp("b16") / "epoch_latest.pt")


@pytest.mark.slow  # full-width checkpoint
def test_written_tensors_are_byte_identical_to_source_slices(b16_checkpoint, tmp_path):
    before = tree_sha256(b16_checkpoint)
    summary = convert_checkpoint(b16_checkpoint, tmp_path / "hf")
    written = load_folder_state(tmp_path / "hf")
    comparison = compare_state(convert_state_dict(load_checkpoint(b16_checkpoint).state_dict).state_dict, written)
    assert comparison.ok and comparison.total == len(written), comparison.describe()
    assert tree_sha256(b16_checkpoint) == before, "the input must never change"
    assert summary.source_sha256 is None  # the whole file's hash only with file_sha256=True (tests/test_provenance.py)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert (
        summary.source_weights_digest in card and "epoch_latest.pt" in card and "custom" in card and "float32" in card
    )
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["report"]["ok"] and len(report["report"]["sources"]) == len(
        load_checkpoint(b16_checkpoint).state_dict
    )


@pytest.mark.slow  # full-width checkpoint
def test_mixed_fp16_kept_byte_for_byte_and_config_records_majority(tmp_path):
    model = build_model(REDUCED["ViT-B-16"], seed=3)
    checkpoint = save(training_checkpoint(model, fp16=True), tmp_path / "fp16.pt")
    summary = convert_checkpoint(checkpoint, tmp_path / "hf")
    written = load_folder_state(tmp_path / "hf")
    source = load_checkpoint(checkpoint).state_dict
    assert written["vision_model.pre_layrnorm.weight"].dtype == torch.float32
    assert written["vision_model.encoder.layers.0.self_attn.q_proj.weight"].dtype == torch.float16
    assert torch.equal(written["visual_projection.weight"], source["visual.proj"].t())
    assert set(summary.dtypes_written) == {"float16", "float32"}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "float16"


@pytest.mark.slow  # full-width checkpoint
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_dtype_option_casts_every_tensor(b16_checkpoint, tmp_path, dtype):
    summary = convert_checkpoint(b16_checkpoint, tmp_path / "hf", dtype=dtype)
    assert summary.dtypes_written.keys() == {dtype}
    assert {t.dtype for t in load_folder_state(tmp_path / "hf").values()} == {getattr(torch, dtype)}
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == dtype


@pytest.mark.slow  # full-width checkpoint
def test_sharded_output_has_an_index_and_loads(b16_checkpoint, tmp_path):
    summary = convert_checkpoint(b16_checkpoint, tmp_path / "hf", max_shard_size="100MB")
    shards = sorted(p.name for p in (tmp_path / "hf").glob("model-*.safetensors"))
    assert len(shards) >= 2 and "model.safetensors.index.json" in summary.files
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in load_folder_state(tmp_path / "hf").values()
    )
    assert_model_holds(reload_strictly(tmp_path / "hf"), load_checkpoint(b16_checkpoint).state_dict)


@pytest.mark.slow  # full-width checkpoint
def test_tokenizer_and_processor_load_offline_and_match_cn_clip(b16_checkpoint, tmp_path, sample_image):
    from cn_clip.clip import image_transform, tokenize

    convert_checkpoint(b16_checkpoint, tmp_path / "hf", vocab=VOCAB)
    processor = ChineseCLIPProcessor.from_pretrained(tmp_path / "hf")
    ids = processor.tokenizer(CAPTIONS, padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, tokenize(CAPTIONS))
    assert processor.tokenizer.model_max_length == 52
    config = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert config["size"] == {"height": 224, "width": 224} and config["do_center_crop"] is False
    assert config["resample"] == 3
    pil_processor = ChineseCLIPProcessor.from_pretrained(tmp_path / "hf", backend="pil")
    pixels = pil_processor(images=sample_image, return_tensors="pt")["pixel_values"][0]
    # Same PIL bicubic resize on both sides; only float rounding of the normalisation differs (~1e-7).
    assert (pixels - image_transform(224)(sample_image)).abs().max() < 1e-5


@pytest.mark.slow  # full-width checkpoint
def test_vocab_beside_checkpoint_is_used_else_the_packaged_standard_one(b16_checkpoint, tmp_path):
    local = tmp_path / "run"
    local.mkdir()
    checkpoint = local / "ckpt.pt"
    checkpoint.write_bytes(b16_checkpoint.read_bytes())
    (local / "vocab.txt").write_text(VOCAB.read_text(encoding="utf-8"), encoding="utf-8")
    summary = convert_checkpoint(checkpoint, tmp_path / "with")
    assert "beside the checkpoint; the standard Chinese-CLIP vocabulary" in summary.vocabulary
    (local / "vocab.txt").unlink()
    summary = convert_checkpoint(checkpoint, tmp_path / "without")  # no vocab anywhere near: the packaged one
    assert "the standard Chinese-CLIP vocabulary, shipped with chclip-convert" in summary.vocabulary
    assert (tmp_path / "without" / "vocab.txt").read_bytes() == assets_module.STANDARD_VOCAB.read_bytes()
    processor = ChineseCLIPProcessor.from_pretrained(tmp_path / "without")
    from cn_clip.clip import tokenize

    ids = processor.tokenizer(CAPTIONS, padding="max_length", max_length=52, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, tokenize(CAPTIONS, context_length=52))


def test_the_packaged_vocabulary_is_cn_clips_byte_for_byte():
    """The shipped file is recognised by its digest, and it is the file cn_clip itself tokenizes with."""
    import hashlib
    import importlib.util

    packaged = assets_module.STANDARD_VOCAB.read_bytes()
    assert hashlib.sha256(packaged).hexdigest() == assets_module.STANDARD_VOCAB_SHA256
    cn_clip_vocab = Path(importlib.util.find_spec("cn_clip").submodule_search_locations[0]) / "clip" / "vocab.txt"
    assert cn_clip_vocab.read_bytes() == packaged
    assert len(assets_module.vocab_tokens(assets_module.STANDARD_VOCAB)) == 21128
    assert assets_module.is_standard_vocab(cn_clip_vocab) and not assets_module.is_standard_vocab(Path(__file__))


@pytest.mark.slow  # full-width checkpoint
def test_wrong_size_vocab_is_refused_and_nothing_written(b16_checkpoint, tmp_path):
    small = tmp_path / "vocab.txt"
    small.write_text("[PAD]\n[UNK]\n", encoding="utf-8")
    # A plain ConversionError (no subclass is about vocabularies): the message naming the file is the contract.
    says = f"{small}: the vocabulary has 2 tokens but the model's word embedding has 21128 rows"
    with pytest.raises(ConversionError, match=re.escape(says)):
        convert_checkpoint(b16_checkpoint, tmp_path / "hf", vocab=small)
    assert not (tmp_path / "hf").exists()
    assert not list(tmp_path.glob("*.chclip-partial*"))


@pytest.mark.slow  # full-width checkpoint
def test_existing_folder_is_kept_unless_overwrite(b16_checkpoint, tmp_path):
    target = tmp_path / "hf"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match=re.escape(f"{target}: exists and is not empty; nothing was written")):
        convert_checkpoint(b16_checkpoint, target)
    assert (target / "mine.txt").read_text() == "keep me"
    convert_checkpoint(b16_checkpoint, target, overwrite=True)
    assert not (target / "mine.txt").exists() and (target / "model.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


@pytest.mark.slow  # full-width checkpoint
def test_failure_while_writing_leaves_old_folder_and_no_partial(b16_checkpoint, tmp_path, monkeypatch):
    target = tmp_path / "hf"
    convert_checkpoint(b16_checkpoint, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    (tmp_path / "hf.chclip-partial").mkdir()  # left by a killed run: cleaned up by the next one

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(assets_module, "write_image_processor", disk_full)
    with pytest.raises(OutputError, match=re.escape(f"{target}: writing failed: No space left on device")):
        convert_checkpoint(b16_checkpoint, target, overwrite=True)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


@pytest.mark.slow  # full-width checkpoint
def test_output_may_not_be_or_contain_the_input(b16_checkpoint, tmp_path):
    would_replace = f"the output folder would hold or replace the input checkpoint {b16_checkpoint.resolve()}"
    with pytest.raises(OutputError, match=re.escape(f"{b16_checkpoint.parent}: {would_replace}")):
        convert_checkpoint(b16_checkpoint, b16_checkpoint.parent, overwrite=True)
    with pytest.raises(OutputError, match=re.escape(f"{b16_checkpoint}: {would_replace}")):
        convert_checkpoint(b16_checkpoint, b16_checkpoint, overwrite=True)
    assert b16_checkpoint.is_file()


@pytest.mark.slow  # full-width checkpoint
def test_unknown_and_missing_tensors_stop_with_one_report(b16_checkpoint, tmp_path):
    state = dict(load_checkpoint(b16_checkpoint).state_dict)
    del state["bert.encoder.layer.1.output.dense.bias"]
    state["visual.extra_head.weight"] = torch.zeros(3)
    state["visual.ln_post.weight"] = torch.zeros(5)
    broken = save(state, tmp_path / "broken.pt")
    with pytest.raises(MappingError) as caught:
        convert_checkpoint(broken, tmp_path / "hf")
    message = str(caught.value)
    assert "1 unused key(s)" in message and "visual.extra_head.weight" in message
    assert "1 missing key(s)" in message and "text_model.encoder.layer.1.output.dense.bias" in message
    assert "vision_model.post_layernorm.weight: got [5], expected [768]" in message
    assert str(broken) in message
    assert not (tmp_path / "hf").exists()


def test_the_model_card_holds_no_path_of_this_machine_and_keeps_warnings_apart(tmp_path):
    """The card is meant to be shared: it names the source file, never where it or its vocabulary lies."""
    from chclip_convert.conversion.demo import write_demo_checkpoint

    checkpoint = write_demo_checkpoint(tmp_path / "runs" / "private")
    (checkpoint.parent / "vocab.txt").write_text("[PAD]\n[UNK]\n", encoding="utf-8")  # does not fit: skipped
    with pytest.warns(UserWarning, match="not used"):
        summary = convert_checkpoint(checkpoint, tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert str(tmp_path) not in card and "/runs/private" not in card
    assert "- warning: vocab.txt (beside the checkpoint) not used: the vocabulary has 2 tokens" in card
    assert f"| source | {checkpoint.name} (training dict with module. prefix) |" in card
    text = summary.to_text()
    assert "  warning: vocab.txt (beside the checkpoint) not used" in text
    assert all(line.startswith("  note: ") for line in text.splitlines() if "head width" in line)


def test_the_atomic_writer_replaces_files_in_one_step_and_never_what_appeared_meanwhile(tmp_path):
    from chclip_convert.files.output import atomic_output

    target = tmp_path / "back.pt"
    target.write_bytes(b"old")
    with atomic_output(target, overwrite=True, folder=False) as partial:
        partial.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    other, folder = tmp_path / "other.pt", tmp_path / "hf"
    appeared = pytest.raises(OutputError, match=r"other\.pt: appeared while writing")
    with appeared, atomic_output(other, overwrite=False, folder=False) as partial:
        partial.write_bytes(b"ours")
        other.write_bytes(b"theirs")  # another process got there first
    with (
        pytest.raises(OutputError, match="hf: appeared while writing"),
        atomic_output(folder, overwrite=False) as partial,
    ):
        (partial / "config.json").write_text("{}")
        folder.mkdir()
        (folder / "theirs.txt").write_text("keep me")
    assert other.read_bytes() == b"theirs" and [p.name for p in folder.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.pt", "hf", "other.pt"], "a partial was left"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with (
        pytest.raises(OutputError, match="a-file is a file, not a folder"),
        atomic_output(blocker / "hf", overwrite=False),
    ):
        pass

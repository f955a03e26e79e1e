"""Reverse conversion (transformers → original) and verification, against cn_clip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from cn_clip.clip.model import CLIP, resize_pos_embed
from safetensors.torch import load_file, save_file
from support.converted import small_config
from support.original import (
    REDUCED,
    REDUCED_SWEEP,
    VOCAB,
    build_model,
    image_batch,
    model_kwargs,
    save,
    token_batch,
    training_checkpoint,
)
from transformers import ChineseCLIPModel

from chclip_convert import (
    MappingError,
    OutputError,
    UnsupportedCheckpointError,
    convert_checkpoint,
)
from chclip_convert.conversion.reverse import reverse_folder, reverse_state_dict
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.files.folder import load_folder_state
from chclip_convert.mapping.architecture import cn_clip_kwargs
from chclip_convert.verification.verify import verify_folder


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


@pytest.mark.parametrize("name", REDUCED_SWEEP)
def test_round_trips_are_bit_exact(name, reduced_checkpoints, tmp_path):
    source = load_checkpoint(reduced_checkpoints[name]).state_dict
    convert_checkpoint(reduced_checkpoints[name], tmp_path / "hf")
    reverse_folder(tmp_path / "hf", tmp_path / "back.pt")
    back = load_checkpoint(tmp_path / "back.pt").state_dict
    assert set(back) == set(source)
    assert all(same_bytes(back[key], source[key]) for key in source)
    convert_checkpoint(tmp_path / "back.pt", tmp_path / "hf2")
    first, second = load_folder_state(tmp_path / "hf"), load_folder_state(tmp_path / "hf2")
    assert set(first) == set(second) and all(same_bytes(first[k], second[k]) for k in first)


@pytest.mark.slow  # full-width checkpoint
def test_mixed_fp16_round_trip_keeps_every_dtype(tmp_path):
    model = build_model(REDUCED["ViT-B-16"], seed=4)
    checkpoint = save(training_checkpoint(model, fp16=True), tmp_path / "fp16.pt")
    convert_checkpoint(checkpoint, tmp_path / "hf")
    reverse_folder(tmp_path / "hf", tmp_path / "back.pt", bare=True)
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    source = load_checkpoint(checkpoint).state_dict
    assert set(back) == set(source) and all(same_bytes(back[k], source[k]) for k in source)


@pytest.mark.slow  # full-width checkpoint
def test_reverse_output_loads_into_cn_clip_strictly_and_resumes_training(reduced_models, reduced_checkpoints, tmp_path):
    model_name = "ViT-L-14-336"
    convert_checkpoint(reduced_checkpoints[model_name], tmp_path / "hf")
    reverse_folder(tmp_path / "hf", tmp_path / "epoch_latest.pt")
    fresh = CLIP(**model_kwargs(REDUCED[model_name]))
    bare = load_checkpoint(tmp_path / "epoch_latest.pt").state_dict
    fresh.load_state_dict(bare, strict=True)
    # cn_clip/training/main.py's resume path, on a DistributedDataParallel-style wrapper (module. keys).
    wrapper = torch.nn.Module()
    wrapper.module = CLIP(**model_kwargs(REDUCED[model_name]))
    checkpoint = torch.load(tmp_path / "epoch_latest.pt", map_location="cpu")
    sd = {k: v for k, v in checkpoint["state_dict"].items() if "bert.pooler" not in k}
    resize_pos_embed(sd, wrapper.module, prefix="module.")
    wrapper.load_state_dict(sd)
    source = torch.load(reduced_checkpoints[model_name], weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step"]) == (source["epoch"], source["step"])  # cn_clip resumes there
    assert isinstance(checkpoint["epoch"], int) and isinstance(checkpoint["step"], int)
    reference = reduced_models[model_name]
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), wrapper.module.parameters(), strict=True))


@pytest.mark.slow  # full-width checkpoint
def test_training_metadata_survives_the_round_trip(reduced_models, tmp_path):
    """A fine-tuned run's epoch, step and run name go into the folder's report and card, and back into the .pt."""
    trained = {**training_checkpoint(reduced_models["ViT-B-16"], optimizer=True), "epoch": 1, "step": 1000}
    trained["name"] = "muge-finetune-lr3e-5"
    checkpoint = save(trained, tmp_path / "run" / "checkpoints" / "epoch1.pt")
    convert_checkpoint(checkpoint, tmp_path / "hf")
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["training"] == {"epoch": 1, "step": 1000, "name": trained["name"]}
    card = (tmp_path / "hf" / "README.md").read_text()
    assert f"| training | epoch 1, step 1000, run {trained['name']} |" in card
    summary = reverse_folder(tmp_path / "hf", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert (back["epoch"], back["step"], back["name"]) == (1, 1000, trained["name"])
    assert "optimizer" not in back and "from conversion_report.json" in summary.to_text()
    assert "continues after epoch 1, step 1000" in summary.to_text()
    source = trained["state_dict"]
    assert back["state_dict"].keys() == source.keys()
    assert all(same_bytes(back["state_dict"][key], source[key]) for key in source)
    # --bare stays a plain state dict, whatever the folder records.
    reverse_folder(tmp_path / "hf", tmp_path / "bare.pt", bare=True)
    bare = torch.load(tmp_path / "bare.pt", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in bare.values()) and "epoch" not in bare
    assert {f"module.{key}" for key in bare} == source.keys()


@pytest.mark.slow  # full-width checkpoint
def test_a_bare_state_dict_or_a_folder_without_a_record_reverses_with_the_defaults(reduced_models, tmp_path):
    model = reduced_models["ViT-B-16"]
    checkpoint = save(model.state_dict(), tmp_path / "bare.pt")
    convert_checkpoint(checkpoint, tmp_path / "hf")
    report = json.loads((tmp_path / "hf" / "conversion_report.json").read_text())
    assert report["training"] == {"epoch": None, "step": None, "name": None}
    assert "| training |" not in (tmp_path / "hf" / "README.md").read_text()
    summary = reverse_folder(tmp_path / "hf", tmp_path / "back.pt")
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert (back["epoch"], back["step"], back["name"]) == (0, 0, "from hf")
    assert "defaults: conversion_report.json records none" in summary.to_text()
    source = model.state_dict()
    assert all(same_bytes(back["state_dict"][f"module.{key}"], source[key]) for key in source)
    # A folder from elsewhere (the Hub's have no conversion_report.json): the defaults, and said why.
    (tmp_path / "hf" / "conversion_report.json").unlink()
    summary = reverse_folder(tmp_path / "hf", tmp_path / "hub.pt")
    hub = torch.load(tmp_path / "hub.pt", weights_only=True)
    assert (hub["epoch"], hub["step"], hub["name"]) == (0, 0, "from hf")
    assert "defaults: the folder has no conversion_report.json" in summary.to_text()
    assert "--reset-data-offset" in summary.to_text()
    (tmp_path / "hf" / "conversion_report.json").write_text("{not json", encoding="utf-8")
    summary = reverse_folder(tmp_path / "hf", tmp_path / "unreadable.pt")
    assert torch.load(tmp_path / "unreadable.pt", weights_only=True)["epoch"] == 0
    assert "defaults: conversion_report.json is not valid JSON" in summary.to_text()


def test_reverse_a_folder_saved_by_transformers_with_old_buffers(tmp_path):
    """A folder as published by others: written by transformers itself, weights in pytorch_model.bin,
    with the position_ids buffers older transformers versions saved."""
    hf = ChineseCLIPModel(small_config())
    hf.save_pretrained(tmp_path / "published")
    state = load_file(str(tmp_path / "published" / "model.safetensors"))
    state["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    state["vision_model.embeddings.position_ids"] = torch.arange(5)[None]
    (tmp_path / "published" / "model.safetensors").unlink()
    torch.save(state, tmp_path / "published" / "pytorch_model.bin")
    reverse_folder(tmp_path / "published", tmp_path / "orig.pt", bare=True)
    original = torch.load(tmp_path / "orig.pt", weights_only=True)
    q, k, v = (state[f"vision_model.encoder.layers.1.self_attn.{p}_proj.weight"] for p in "qkv")
    assert torch.equal(original["visual.transformer.resblocks.1.attn.in_proj_weight"], torch.cat([q, k, v]))
    assert torch.equal(original["visual.proj"], state["visual_projection.weight"].t())
    # The same table forward again gives back the folder's tensors.
    config = tmp_path / "published" / "config.json"
    with pytest.warns(UserWarning, match="not used: the vocabulary has 21128 tokens"):  # cn_clip's, 30 rows here
        back = convert_checkpoint(tmp_path / "orig.pt", tmp_path / "again", config=config)
    assert back.report.ok


def test_reverse_rejects_incomplete_or_foreign_folders(tmp_path):
    state = dict(ChineseCLIPModel(small_config()).state_dict())
    del state["vision_model.encoder.layers.0.self_attn.k_proj.weight"]
    state["vision_model.extra.weight"] = torch.zeros(2)
    with pytest.raises(MappingError) as caught:
        reverse_state_dict(state)
    message = str(caught.value)
    assert "vision_model.extra.weight" in message and "layers.0.self_attn.k_proj.weight" in message
    save_file({"a": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(UnsupportedCheckpointError, match="is a file, not a transformers folder"):
        reverse_folder(tmp_path / "x.safetensors", tmp_path / "o.pt")


@pytest.mark.slow  # full-width checkpoint
def test_reverse_never_overwrites_without_asking(reduced_checkpoints, tmp_path):
    convert_checkpoint(reduced_checkpoints["ViT-B-16"], tmp_path / "hf")
    (tmp_path / "o.pt").write_bytes(b"mine")
    with pytest.raises(OutputError, match=re.escape(f"{tmp_path / 'o.pt'}: exists; pass --overwrite")):
        reverse_folder(tmp_path / "hf", tmp_path / "o.pt")
    assert (tmp_path / "o.pt").read_bytes() == b"mine"
    reverse_folder(tmp_path / "hf", tmp_path / "o.pt", overwrite=True)
    assert not list(tmp_path.glob("*.chclip-partial*"))


@pytest.mark.slow  # full-width checkpoint
def test_verify_passes_on_a_faithful_conversion(reduced_checkpoints, tmp_path):
    convert_checkpoint(reduced_checkpoints["ViT-H-14"], tmp_path / "hf", vocab=VOCAB)
    report = verify_folder(reduced_checkpoints["ViT-H-14"], tmp_path / "hf")
    assert report.ok, report.to_text()
    names = [check.name for check in report.checks]
    assert "token ids equal" in names and "top-1 agrees" in names and "pixel max abs diff" in names
    assert report.details["image feature max abs diff"] <= 1e-5  # fp32 on both sides, as in test_parity
    # The outputs compared are kept, so they can be shown without running either model again.
    original, converted = report.original_outputs, report.converted_outputs
    found = (converted.logits_per_image - original.logits_per_image).abs().max().item()
    assert found == report.details["logits max abs diff"] and converted.image_features.shape[0] == 1
    # The checks of the outputs, with their tolerances, are the report's last ones, starting at the pixels.
    assert report.output_checks == report.checks[names.index("pixel max abs diff") :]
    assert names[-1] == "top-1 agrees" and all(check.requirement for check in report.output_checks)


@pytest.mark.slow  # full-width checkpoint
def test_verify_a_flash_attention_checkpoint(reduced_models, tmp_path):
    from cn_clip.clip.model import convert_state_dict as to_flash_layout

    model = reduced_models["ViT-B-16"]
    flash = to_flash_layout({f"module.{k}": v.clone() for k, v in model.state_dict().items()})
    checkpoint = save({"state_dict": flash, "epoch": 1}, tmp_path / "flash.pt")
    convert_checkpoint(checkpoint, tmp_path / "hf", vocab=VOCAB)
    report = verify_folder(checkpoint, tmp_path / "hf")
    assert report.ok, report.to_text()
    assert "not applicable" in report.to_text()


@pytest.mark.slow  # full-width checkpoint
def test_verify_uses_16_bit_tolerances_for_a_cast_folder(reduced_checkpoints, tmp_path):
    convert_checkpoint(reduced_checkpoints["ViT-B-16"], tmp_path / "hf", vocab=VOCAB, dtype="float16")
    report = verify_folder(reduced_checkpoints["ViT-B-16"], tmp_path / "hf")
    assert report.precision == "float16" and report.ok, report.to_text()


@pytest.mark.slow  # another Python process
def test_verify_fails_on_a_tampered_folder_and_the_cli_says_so(reduced_checkpoints, tmp_path):
    checkpoint = reduced_checkpoints["ViT-B-16"]
    convert_checkpoint(checkpoint, tmp_path / "hf", vocab=VOCAB)
    state = load_folder_state(tmp_path / "hf")
    q, k = (f"vision_model.encoder.layers.0.self_attn.{p}_proj.weight" for p in "qk")
    state[q], state[k] = state[k].clone(), state[q].clone()  # the q/k order mistake a converter can make
    save_file(state, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    report = verify_folder(checkpoint, tmp_path / "hf")
    failed = {check.name for check in report.checks if not check.passed}
    assert "weights equal source" in failed and "image max abs diff (relative)" in failed
    result = subprocess.run(
        [sys.executable, "-m", "chclip_convert", "verify", str(checkpoint), str(tmp_path / "hf")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 3 and "Verification FAILED." in result.stdout


@pytest.mark.slow  # full-width checkpoint
def test_verify_without_cn_clip_checks_what_it_can(reduced_checkpoints, tmp_path):
    convert_checkpoint(reduced_checkpoints["ViT-B-16"], tmp_path / "hf", vocab=VOCAB)
    report = verify_folder(reduced_checkpoints["ViT-B-16"], tmp_path / "hf", use_original=False)
    assert report.ok and not report.original_available
    assert [c.name for c in report.checks] == [
        "weights equal source",
        "folder reloads",
        "config.json matches the checkpoint",
        "preprocessor_config.json matches cn_clip",
        "vocab.txt equals reference",
        "tokenizer.json equals reference",
        "tokenizer_config.json matches the reference",
        "token ids equal",
        "round trip transformers → original → transformers",
        "round trip original → transformers → original",
        "source weights digest",
    ]
    assert "not installed" in report.to_text()


@pytest.mark.slow  # another Python process
def test_cli_reverse_and_convert_with_verify(reduced_models, reduced_checkpoints, sample_image, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "chclip_convert"]
    result = subprocess.run(
        [*run, str(reduced_checkpoints["ViT-L-14"]), str(tmp_path / "hf"), "--verify", "--vocab", str(VOCAB)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "Verified: all checks pass." in result.stdout
    result = subprocess.run(
        [*run, "reverse", str(tmp_path / "hf"), str(tmp_path / "o.pt")], capture_output=True, text=True
    )
    assert result.returncode == 0 and "--reset-optimizer" in result.stdout
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "chinese_clip"
    # What the command line wrote back converts again, and is the original model to cn_clip: built from the
    # architecture read off it, cn_clip's CLIP loads it strictly and holds and computes what the source model does.
    summary = convert_checkpoint(tmp_path / "o.pt", tmp_path / "hf2")
    assert summary.report.ok
    model = CLIP(**cn_clip_kwargs(summary.architecture)).eval()
    model.load_state_dict(load_checkpoint(tmp_path / "o.pt").state_dict, strict=True)  # raises on any key or shape
    reference = reduced_models["ViT-L-14"]
    source = reference.state_dict()
    assert model.state_dict().keys() == source.keys()
    assert all(torch.equal(tensor, source[key]) for key, tensor in model.state_dict().items())
    images, tokens = image_batch(sample_image, 224), token_batch()
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), reference.encode_image(images))
        assert torch.equal(model.encode_text(tokens), reference.encode_text(tokens))


def test_reverse_without_a_config_names_a_whole_missing_layer():
    """Without config.json the depth comes from the deepest layer present: a layer missing below it is named."""
    state = {k: v for k, v in ChineseCLIPModel(small_config()).state_dict().items() if ".layers.0." not in k}
    with pytest.raises(MappingError) as caught:
        reverse_state_dict(state)
    assert "vision_model.encoder.layers.0.mlp.fc1.weight" in str(caught.value)

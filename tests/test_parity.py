"""Converted models give the original model's outputs (cn_clip 1.6.0 is the reference).

Tolerance: 1e-5 absolute in fp32. Both sides run the same fp32 arithmetic in a different order
(nn.MultiheadAttention's fused in_proj vs three Linear layers, different softmax/matmul kernels), which
leaves differences of a few 1e-6 on features of magnitude ~1; anything from a wrong mapping is ≥1e-2.

Each architecture runs at full width (two layers a tower; ViT-B-16 in the fast tier, the others marked slow) and
ViT-B-16 at full size (slow). Layouts, dtypes and extra keys, which do not depend on the sizes, run on a narrow
ViT-B-16 (two heads a tower, cn_clip's vocabulary): a few megabytes instead of 0.2–0.6 GB.
"""

from __future__ import annotations

import pytest
import torch
from cn_clip.clip.model import convert_models_to_fp32, convert_state_dict
from support.original import (
    FULL_B16,
    NARROW,
    REDUCED_SWEEP,
    build_model,
    image_batch,
    save,
    token_batch,
    training_checkpoint,
)
from transformers import ChineseCLIPModel

from chclip_convert.cli.main import main as cli_main

FP32_TOLERANCE = 1e-5


def original_outputs(model, images, tokens):
    with torch.no_grad():
        image_features = model.encode_image(images).float()
        text_features = model.encode_text(tokens).float()
        logits_per_image, _ = model.get_similarity(images, tokens)
    return image_features, text_features, logits_per_image.float()


def converted_outputs(folder, images, tokens, dtype=torch.float32):
    model = ChineseCLIPModel.from_pretrained(folder, dtype=dtype).eval()
    mask = tokens.ne(0).long()
    with torch.no_grad():
        image_features = model.get_image_features(pixel_values=images).pooler_output
        text_features = model.get_text_features(input_ids=tokens, attention_mask=mask).pooler_output
        logits = model(input_ids=tokens, attention_mask=mask, pixel_values=images).logits_per_image
    return image_features, text_features, logits


def assert_parity(original, converted, tolerance=FP32_TOLERANCE):
    for name, a, b in zip(("image features", "text features", "logits"), original, converted, strict=True):
        assert a.shape == b.shape, name
        difference = (a - b).abs().max().item()
        assert difference <= tolerance, f"{name}: max abs difference {difference:.3g} > {tolerance}"


def convert_with_cli(checkpoint, output, *extra):
    assert cli_main(["convert", str(checkpoint), str(output), "--no-progress", *extra]) == 0


@pytest.mark.parametrize("name", REDUCED_SWEEP)
def test_reduced_architecture_matches_cn_clip(name, reduced_models, reduced_checkpoints, sample_image, tmp_path):
    model = reduced_models[name]
    convert_with_cli(reduced_checkpoints[name], tmp_path / "hf")
    images = image_batch(sample_image, model.visual.input_resolution)
    tokens = token_batch()
    assert_parity(original_outputs(model, images, tokens), converted_outputs(tmp_path / "hf", images, tokens))


@pytest.fixture(scope="module")
def narrow_model():
    return build_model(NARROW, seed=12)


def test_flash_attention_layout_matches(narrow_model, sample_image, tmp_path):
    """A raw state_dict() of a --use-flash-attention model: Wqkv and out_proj names on both towers."""
    model = narrow_model
    state = convert_state_dict({f"module.{k}": v.clone() for k, v in model.state_dict().items()})
    assert any(".attention.self.Wqkv.weight" in key for key in state)
    assert any(".attn.Wqkv.weight" in key for key in state)
    checkpoint = save({"state_dict": state, "epoch": 1}, tmp_path / "flash.pt")
    convert_with_cli(checkpoint, tmp_path / "hf")
    images, tokens = image_batch(sample_image, 224), token_batch()
    assert_parity(original_outputs(model, images, tokens), converted_outputs(tmp_path / "hf", images, tokens))


def test_mixed_fp16_checkpoint_matches_in_fp32(sample_image, tmp_path):
    """cn_clip's --precision fp16 state dict: the converted folder keeps every dtype, and the fp16-rounded
    weights computed in fp32 on both sides agree to fp32 tolerance."""
    model = build_model(NARROW, seed=11)  # its own: converting to fp16 changes the model
    checkpoint = save(training_checkpoint(model, fp16=True), tmp_path / "fp16.pt")
    dtypes = {p.dtype for p in model.parameters()}
    assert dtypes == {torch.float16, torch.float32}
    convert_with_cli(checkpoint, tmp_path / "hf")
    convert_models_to_fp32(model)
    images, tokens = image_batch(sample_image, 224), token_batch()
    assert_parity(original_outputs(model, images, tokens), converted_outputs(tmp_path / "hf", images, tokens))


def test_bare_state_dict_with_pooler_and_optimizer(narrow_model, sample_image, tmp_path):
    """A bare ``model.state_dict()`` with the BERT pooler cn_clip never uses, and a training checkpoint with
    optimizer state: the extra tensors are left out and the outputs are the model's."""
    model = narrow_model
    bare = dict(model.state_dict())
    width = bare["bert.embeddings.word_embeddings.weight"].shape[1]
    bare["bert.pooler.dense.weight"] = torch.randn(width, width)
    bare["bert.pooler.dense.bias"] = torch.randn(width)
    convert_with_cli(save(bare, tmp_path / "bare.pt"), tmp_path / "bare")
    with_optimizer = training_checkpoint(model, optimizer=True)
    convert_with_cli(save(with_optimizer, tmp_path / "train.pt"), tmp_path / "train")
    images, tokens = image_batch(sample_image, 224), token_batch()
    expected = original_outputs(model, images, tokens)
    assert_parity(expected, converted_outputs(tmp_path / "bare", images, tokens))
    assert_parity(expected, converted_outputs(tmp_path / "train", images, tokens))


@pytest.mark.slow
def test_full_size_vit_b_16_end_to_end(sample_image, tmp_path):
    model = build_model(FULL_B16, seed=5)
    checkpoint = save(training_checkpoint(model), tmp_path / "clip_cn_vit-b-16.pt")
    convert_with_cli(checkpoint, tmp_path / "hf")
    images, tokens = image_batch(sample_image, 224), token_batch()
    assert_parity(original_outputs(model, images, tokens), converted_outputs(tmp_path / "hf", images, tokens))

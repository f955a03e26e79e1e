"""The embedded demo is a real original-format checkpoint: cn_clip's own CLIP loads it strictly, and the
converted folder gives the same outputs through each side's own preprocessing and tokenizer."""

from __future__ import annotations

import hashlib

import torch
from cn_clip.clip.model import CLIP

from chclip_convert import convert_checkpoint, infer_architecture
from chclip_convert.conversion.demo import demo_vocabulary, write_demo_checkpoint
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.mapping.architecture import cn_clip_kwargs
from chclip_convert.verification.model_outputs import (
    SAMPLE_CAPTIONS,
    differences,
    run_converted,
    run_original,
    sample_image,
)


def test_demo_is_deterministic_and_in_training_layout(tmp_path):
    first = write_demo_checkpoint(tmp_path / "a")
    second = write_demo_checkpoint(tmp_path / "b")
    assert hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    raw = torch.load(first, weights_only=True)
    assert {"epoch", "step", "name", "state_dict"} <= set(raw)
    assert all(key.startswith("module.") for key in raw["state_dict"])
    assert (first.parent / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1] == demo_vocabulary()


def test_cn_clip_loads_the_demo_strictly(tmp_path):
    state = load_checkpoint(write_demo_checkpoint(tmp_path)).state_dict
    model = CLIP(**cn_clip_kwargs(infer_architecture(state)))
    model.load_state_dict(state, strict=True)


def test_demo_conversion_matches_cn_clip_end_to_end(tmp_path):
    checkpoint = write_demo_checkpoint(tmp_path)
    convert_checkpoint(checkpoint, tmp_path / "hf")
    image = sample_image()
    original = run_original(checkpoint, tmp_path / "vocab.txt", [image], SAMPLE_CAPTIONS)
    converted = run_converted(tmp_path / "hf", [image], SAMPLE_CAPTIONS)
    result = differences(original, converted)
    assert result["token ids equal"] and result["top-1 agrees"]
    # Both sides resize with PIL bicubic and normalise in float32: identical up to rounding (~1e-7).
    assert result["pixel max abs diff"] < 1e-5
    # fp32 arithmetic in a different order on each side; see tests/test_parity.py for the reasoning.
    for name in ("image feature max abs diff", "text feature max abs diff", "logits max abs diff"):
        assert result[name] <= 1e-5, name

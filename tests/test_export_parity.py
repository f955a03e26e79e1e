"""The export's parity arithmetic on planted outputs: logits are compared at the size of the logit scale, so a
batch whose cosines are all near 0 does not turn a rounding error into a failure, while a wrong model still
fails."""

from __future__ import annotations

import numpy as np
import torch

from chclip_convert.export.parity import FP32, compare, logit_scale


def reference(scale: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Combined-graph outputs of 2 images and 3 captions whose embeddings are nearly orthogonal (random, 512-d)."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(2, 512, generator=generator, dtype=torch.float64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 512, generator=generator, dtype=torch.float64), dim=-1)
    logits = scale * image @ text.T
    return {"image_embeds": image, "text_embeds": text, "logits_per_image": logits, "logits_per_text": logits.T}


def test_the_logit_scale_is_read_back_from_the_outputs():
    assert abs(logit_scale(reference(100.0)) - 100.0) < 1e-9  # least squares of exact products: float64 rounding


def failed(checks) -> list[str]:
    return [check.metric for check in checks if not check.ok]


def test_logits_near_zero_are_judged_against_the_logit_scale():
    want = reference(100.0)
    scale = logit_scale(want)
    assert want["logits_per_image"].abs().max() < 10  # cosines of random 512-d vectors: about 0.04
    # an error of 5e-3: 5e-5 of the logit scale, within float32's 1e-4; but over 5e-4 of these logits' largest
    got = (want["logits_per_image"] + 5e-3).numpy()
    assert failed(compare("model.onnx", FP32, "batch", "logits_per_image", got, want["logits_per_image"])) == [
        "max abs diff / scale"
    ]  # what the check said before it knew the logit scale
    checks = compare("model.onnx", FP32, "batch", "logits_per_image", got, want["logits_per_image"], logit_scale=scale)
    assert failed(checks) == []


def test_a_wrong_model_still_fails_against_the_logit_scale():
    want, wrong = reference(100.0), reference(100.0, seed=1)  # other embeddings: a wrong weight's outputs
    got = wrong["logits_per_image"].numpy().astype(np.float32)
    checks = compare(
        "model.onnx", FP32, "batch", "logits_per_image", got, want["logits_per_image"], logit_scale=logit_scale(want)
    )
    assert "max abs diff / scale" in failed(checks)

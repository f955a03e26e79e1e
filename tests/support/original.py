"""The original side: seeded models built with the original Chinese-CLIP code (cn_clip 1.6.0), saved as training
does, and fixed inputs prepared by cn_clip's own preprocessing and tokenizer.

The reduced variants keep what makes each architecture distinct — patch 16 vs 14, 336 px images, the
80-wide ViT-H heads, the large text tower — and cut depth (and the ViT-B demo width only where said) so
the suite runs in minutes on two cores.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cn_clip.clip as cn_clip_pkg
import pytest
import torch
from cn_clip.clip import image_transform, tokenize
from cn_clip.clip.model import CLIP, convert_weights

from chclip_convert.verification.model_outputs import seeded_original_model

CONFIG_DIR = Path(cn_clip_pkg.__file__).parent / "model_configs"
VOCAB = Path(cn_clip_pkg.__file__).parent / "vocab.txt"


@dataclass(frozen=True)
class Variant:
    """A cn_clip architecture, optionally cut to fewer layers, or made narrower (``sizes``: cn_clip's ``CLIP``
    keyword arguments to change, such as ``vision_width``)."""

    vision: str
    text: str
    vision_layers: int | None = None
    text_layers: int | None = None
    sizes: tuple[tuple[str, int], ...] = ()

    @property
    def full(self) -> bool:
        return self.vision_layers is None and self.text_layers is None


# Known models at full width, cut in depth for speed.
REDUCED = {
    "ViT-B-16": Variant("ViT-B-16", "RoBERTa-wwm-ext-base-chinese", 2, 2),
    "ViT-L-14": Variant("ViT-L-14", "RoBERTa-wwm-ext-base-chinese", 2, 2),
    "ViT-L-14-336": Variant("ViT-L-14-336", "RoBERTa-wwm-ext-base-chinese", 2, 2),
    "ViT-H-14": Variant("ViT-H-14", "RoBERTa-wwm-ext-large-chinese", 2, 2),
}
FULL_B16 = Variant("ViT-B-16", "RoBERTa-wwm-ext-base-chinese")
# ViT-B-16 narrowed to two heads a tower (head width 64), with cn_clip's full vocabulary so that its own tokenizer
# feeds it: about 4 million parameters, for tests about layouts, dtypes and extra keys rather than sizes.
NARROW = Variant(
    "ViT-B-16",
    "RoBERTa-wwm-ext-base-chinese",
    2,
    2,
    sizes=(
        ("vision_width", 128),
        ("text_hidden_size", 128),
        ("text_intermediate_size", 512),
        ("text_num_attention_heads", 2),
        ("embed_dim", 64),
    ),
)
# The architectures as test parameters: ViT-B-16 in the fast tier, the other three (0.2–0.4 GB of tensors each)
# marked slow. The fast tier still maps every architecture at full size, on the meta device (test_architecture.py).
REDUCED_SWEEP = [pytest.param(name, marks=() if name == "ViT-B-16" else pytest.mark.slow) for name in REDUCED]


def model_kwargs(variant: Variant) -> dict:
    """The keyword arguments cn_clip's ``create_model`` would pass to ``CLIP`` for this variant."""
    kwargs = json.loads((CONFIG_DIR / f"{variant.vision}.json").read_text())
    kwargs.update(json.loads((CONFIG_DIR / f"{variant.text}.json").read_text()))
    if isinstance(kwargs["vision_layers"], str):
        kwargs["vision_layers"] = json.loads(kwargs["vision_layers"])
    if variant.vision_layers is not None:
        kwargs["vision_layers"] = variant.vision_layers
    if variant.text_layers is not None:
        kwargs["text_num_hidden_layers"] = variant.text_layers
    kwargs.update(variant.sizes)
    return kwargs


def build_model(variant: Variant, seed: int = 0) -> CLIP:
    """A cn_clip ``CLIP`` of cn_clip's own config for ``variant``, with seeded weights a wrong mapping shows in."""
    return seeded_original_model(model_kwargs(variant), seed=seed)


def tiny_rn50() -> CLIP:
    """A seeded cn_clip ``CLIP`` with a ResNet vision tower (RN50's kind), as small as cn_clip allows."""
    torch.manual_seed(0)
    return CLIP(
        embed_dim=16, image_resolution=64, vision_layers=[1, 1, 1, 1], vision_width=8, vision_patch_size=None,
        vocab_size=32, text_attention_probs_dropout_prob=0.1, text_hidden_act="gelu", text_hidden_dropout_prob=0.1,
        text_hidden_size=16, text_initializer_range=0.02, text_intermediate_size=32, text_max_position_embeddings=16,
        text_num_attention_heads=2, text_num_hidden_layers=1, text_type_vocab_size=2,
    )  # fmt: skip


def training_checkpoint(model: CLIP, *, optimizer: bool = False, fp16: bool = False) -> dict:
    """The dict cn_clip's training writes: a ``module.``-prefixed state dict, epoch, step, name, optimizer."""
    if fp16:
        convert_weights(model)  # cn_clip's --precision fp16: mixed fp16/fp32
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    checkpoint = {"epoch": 3, "step": 1200, "name": "muge_finetune", "state_dict": state}
    if optimizer:
        moments = {
            index: {
                "step": torch.tensor(1200.0),
                "exp_avg": torch.randn_like(p),
                "exp_avg_sq": torch.rand_like(p),
            }
            for index, p in enumerate(model.parameters())
        }
        groups = [{"lr": 1e-5, "params": list(range(len(moments)))}]
        checkpoint["optimizer"] = {"state": moments, "param_groups": groups}
    return checkpoint


def save(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


CAPTIONS = ["一位穿军装的女士", "一只猫", "一辆红色的汽车停在路边", "皮卡丘", "a photo of 一只狗"]


def image_batch(image, size: int) -> torch.Tensor:
    """cn_clip's own preprocessing of the photo, plus a seeded noise image, as one batch."""
    photo = image_transform(size)(image)
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(7))
    return torch.stack([photo, noise])


def token_batch(captions: list[str] = CAPTIONS) -> torch.Tensor:
    """cn_clip's token ids of ``captions``."""
    return tokenize(captions)


class BuiltOnFirstUse(dict):
    """A dict whose value for a missing key is made by ``make(key)`` when first asked for, then kept."""

    def __init__(self, make: Callable[[str], Any]):
        super().__init__()
        self._make = make

    def __missing__(self, key: str):
        self[key] = value = self._make(key)
        return value

"""Build seeded models with the original Chinese-CLIP code (cn_clip 1.6.0) and save them as training does.

The reduced variants keep what makes each architecture distinct — patch 16 vs 14, 336 px images, the
80-wide ViT-H heads, the large text tower — and cut depth (and the ViT-B demo width only where said) so
the suite runs in minutes on two cores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cn_clip.clip as cn_clip_pkg
import torch
from cn_clip.clip.model import CLIP, convert_weights

from chclip_convert.verification.model_outputs import seeded_original_model

CONFIG_DIR = Path(cn_clip_pkg.__file__).parent / "model_configs"
VOCAB = Path(cn_clip_pkg.__file__).parent / "vocab.txt"


@dataclass(frozen=True)
class Variant:
    """A cn_clip architecture, optionally cut to fewer layers."""

    vision: str
    text: str
    vision_layers: int | None = None
    text_layers: int | None = None

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
    return kwargs


def build_model(variant: Variant, seed: int = 0) -> CLIP:
    """A cn_clip ``CLIP`` of cn_clip's own config for ``variant``, with seeded weights a wrong mapping shows in."""
    return seeded_original_model(model_kwargs(variant), seed=seed)


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

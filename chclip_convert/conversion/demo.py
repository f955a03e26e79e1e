"""An embedded demo: a small, seeded Chinese-CLIP checkpoint in the original format, made without a download.

The tensors are laid out exactly as cn_clip's training writes them (a training dict with ``module.``
keys), generated from the mapping table's own source names, with a small vocabulary beside the file so
the tokenizer is found. Its weights are random: it shows the conversion, not a useful model.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch

from chclip_convert.files.output import atomic_output
from chclip_convert.mapping.architecture import Architecture, expected_shapes
from chclip_convert.mapping.table import standard_rules_by_layer
from chclip_convert.names import DEMO_FILE, RUN_SUBFOLDER, VOCAB_FILE

DAMAGED_FILE = "demo_chinese_clip_damaged.pt"

# Twelve layers a tower, as the released models have, so per-layer plots have a shape; narrow, so it stays
# small (about a million parameters) and converts in well under a second. Head counts are invisible in the
# weights: at width 64 the converter infers one head (head width 64), so that is what the demo declares.
DEMO_ARCHITECTURE = Architecture(
    vision_layers=12,
    vision_width=64,
    vision_intermediate=256,  # cn_clip's vision MLP is always four times the width
    vision_heads=1,
    patch_size=16,
    image_size=64,
    text_layers=12,
    text_hidden=64,
    text_intermediate=128,
    text_heads=1,
    vocab_size=0,  # set from the vocabulary below
    max_positions=64,
    type_vocab_size=2,
    projection_dim=64,
)

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARACTERS = (
    "一位穿军装的女士只猫狗辆红色汽车停在路边皮卡丘张照片男人孩子朵花山水天空海城市书桌子"
    "椅电脑手机鸟飞机船火车草地树林雪冬夏春秋日月星夜晚早上跑步吃饭喝茶咖啡音乐画家学生老师"
)
_WORDS = ["a", "photo", "of", "the", "dog", "cat", "car", "##s", "##ing", "and", ",", ".", "!", "?"]

# The damage applied by ``damaged_copy``, and the fix the inspector suggests for each.
DAMAGE = {
    "dropped": "visual.transformer.resblocks.1.mlp.c_proj.bias",
    "added": "visual.adapter.weight",
    "reshaped": "visual.ln_post.weight",
    "altered": "bert.encoder.layer.0.attention.self.query.weight",
}


def demo_vocabulary() -> list[str]:
    """The demo's tokens: BERT's special tokens, a few hundred Chinese characters, some English pieces."""
    return list(dict.fromkeys([*_SPECIAL, *_CHARACTERS, *_WORDS]))


def demo_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Original-format tensors (no prefix) for :data:`DEMO_ARCHITECTURE`, seeded."""
    vocab_size = len(demo_vocabulary())
    shapes = source_shapes(DEMO_ARCHITECTURE, vocab_size)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in shapes.items():
        if name == "logit_scale":
            state[name] = torch.tensor(math.log(1 / 0.07))
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "LayerNorm.weight")):
            state[name] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[name] = 0.02 * torch.randn(shape, generator=generator)
    return state


def write_demo_checkpoint(folder: str | Path, *, seed: int = 0) -> Path:
    """Write the demo checkpoint (training-dict layout, ``module.`` keys) and its ``vocab.txt``; return
    the checkpoint's path. Re-running gives byte-identical files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / VOCAB_FILE).write_text("\n".join(demo_vocabulary()) + "\n", encoding="utf-8")
    checkpoint = {"epoch": 1, "step": 100, "name": "demo", "state_dict": _prefixed(demo_state_dict(seed))}
    return _save(folder / DEMO_FILE, checkpoint)


def damaged_copy(checkpoint: str | Path, *, seed: int = 0) -> Path:
    """Beside ``checkpoint``, write a copy with one tensor dropped, one unknown tensor added, one tensor
    of the wrong shape and one with altered values (:data:`DAMAGE`); return its path."""
    checkpoint = Path(checkpoint)
    loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = dict(loaded["state_dict"])
    generator = torch.Generator().manual_seed(seed + 1)
    del state[f"module.{DAMAGE['dropped']}"]
    state[f"module.{DAMAGE['added']}"] = torch.randn(16, DEMO_ARCHITECTURE.vision_width, generator=generator)
    reshaped = state[f"module.{DAMAGE['reshaped']}"]
    state[f"module.{DAMAGE['reshaped']}"] = reshaped[: reshaped.shape[0] // 2].clone()
    altered = state[f"module.{DAMAGE['altered']}"]
    state[f"module.{DAMAGE['altered']}"] = altered * 3.0 + 0.05
    path = checkpoint.with_name(DAMAGED_FILE)
    torch.save({**loaded, "state_dict": state}, path)
    return path


def source_shapes(arch: Architecture, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Original tensor names and shapes for ``arch``, from the table's standard rules."""
    targets = expected_shapes(replace(arch, vocab_size=vocab_size).to_config())
    shapes = {}
    for rule, index in standard_rules_by_layer(arch.vision_layers, arch.text_layers):
        source, names = rule.expand(index)
        shapes[source] = rule.op.reverse_op.shapes([targets[name] for name in names])[0]
    return dict(sorted(shapes.items()))


# The demo training run: what fine-tuning moved, and by how much per epoch (relative to each tensor's norm).
# The vision tower is frozen, as is the text tower below its last three layers; the moves shrink epoch by
# epoch, as a converging run's do.
RUN_STEPS_PER_EPOCH = 125
RUN_MOVES = {"bert.encoder.layer.9.": 0.004, "bert.encoder.layer.10.": 0.008, "bert.encoder.layer.11.": 0.016,
             "text_projection": 0.03}  # fmt: skip
RUN_EPOCH_SCALE = (1.0, 0.6, 0.3)
RUN_LOGIT_SCALE_STEP = 0.05  # logit_scale grows this much an epoch
RUN_REFERENCE = "pretrained.pt"


def moved_by_demo_run(name: str) -> bool:
    """Whether the demo run changes the original tensor ``name`` (``module.`` prefix removed)."""
    return name == "logit_scale" or name.startswith(tuple(RUN_MOVES))


def demo_run_paths(folder: str | Path) -> tuple[Path, list[Path]]:
    """Where :func:`write_demo_run` puts the reference and the epoch files (``epoch_latest.pt`` last)."""
    folder = Path(folder)
    run = folder / RUN_SUBFOLDER
    epochs = [run / f"epoch{epoch}.pt" for epoch in range(1, len(RUN_EPOCH_SCALE) + 1)]
    return folder / RUN_REFERENCE, [*epochs, run / "epoch_latest.pt"]


def write_demo_run(folder: str | Path, *, seed: int = 0) -> tuple[Path, list[Path]]:
    """Write a pretrained demo checkpoint and three fine-tuned epochs as cn_clip's training names them
    (``checkpoints/epoch1.pt`` … ``epoch3.pt`` and ``epoch_latest.pt``, each with AdamW state); return the
    reference and the epoch files. Re-running gives byte-identical files."""
    folder = Path(folder)
    reference_path, paths = demo_run_paths(folder)
    run = paths[0].parent
    run.mkdir(parents=True, exist_ok=True)
    vocabulary = "\n".join(demo_vocabulary()) + "\n"
    for place in (folder, run):
        (place / VOCAB_FILE).write_text(vocabulary, encoding="utf-8")
    state = demo_state_dict(seed)
    checkpoint = {"epoch": 0, "step": 0, "name": "demo-pretrained", "state_dict": _prefixed(state)}
    reference = _save(reference_path, checkpoint)
    generator = torch.Generator().manual_seed(seed + 2)
    for path, (epoch, scale) in zip(paths, enumerate(RUN_EPOCH_SCALE, 1), strict=False):
        state = {key: _moved(key, value, scale, generator) for key, value in state.items()}
        checkpoint = {
            "epoch": epoch, "step": epoch * RUN_STEPS_PER_EPOCH, "name": "demo-finetune",
            "state_dict": _prefixed(state), "optimizer": _adamw_state(state, epoch),
        }  # fmt: skip
        _save(path, checkpoint)
    _save(paths[-1], checkpoint)  # epoch_latest.pt: the last epoch again, as training leaves it
    return reference, paths


def _moved(key: str, value: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    if key == "logit_scale":
        return value + RUN_LOGIT_SCALE_STEP
    fraction = next((share for prefix, share in RUN_MOVES.items() if key.startswith(prefix)), 0.0)
    if not fraction:
        return value
    noise = torch.randn(value.shape, generator=generator)
    return value + noise * (scale * fraction * value.norm() / noise.norm())


def _adamw_state(state: dict[str, torch.Tensor], epoch: int) -> dict:
    trained = [key for key in state if moved_by_demo_run(key)]
    moments = {
        index: {"step": torch.tensor(float(epoch * RUN_STEPS_PER_EPOCH)),
                "exp_avg": torch.zeros_like(state[key]), "exp_avg_sq": torch.zeros_like(state[key])}
        for index, key in enumerate(trained)
    }  # fmt: skip
    return {"state": moments, "param_groups": [{"lr": 1e-5, "weight_decay": 0.001, "params": list(moments)}]}


def _prefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"module.{key}": value for key, value in state.items()}


def _save(path: Path, checkpoint: dict) -> Path:
    """Write ``checkpoint`` to ``path`` atomically: never a half-written demo file, even if killed."""
    with atomic_output(path, overwrite=True, folder=False) as partial:
        torch.save(checkpoint, partial)
    return path

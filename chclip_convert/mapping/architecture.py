"""The architecture read off the weights, the known Chinese-CLIP models, and the transformers config.

Every size is taken from a tensor shape: layer counts from the layer indices present, the image size
from the length of the position embedding (so a model fine-tuned at another resolution works).
Head counts are not visible in any shape; they come from the known models (ViT-H-14 has 80-wide vision
heads), an explicit override, or, for an unknown width, a head width of 64 — and the result says so.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chclip_convert.errors import ArchitectureError, ConfigMismatchError, UnsupportedCheckpointError
from chclip_convert.mapping.table import TEXT_LAYER, VISION_LAYER, split_layer_index

if TYPE_CHECKING:  # transformers is imported where it is used: its model code takes seconds to import
    from transformers import ChineseCLIPConfig


@dataclass(frozen=True)
class KnownModel:
    """A released Chinese-CLIP model, by the sizes its weights show."""

    name: str
    vision_layers: int
    vision_width: int
    patch_size: int
    image_size: int
    projection_dim: int
    text_layers: int
    text_hidden: int
    text_intermediate: int
    text_name: str  # cn_clip's name of the text tower: create_model("ViT-B-16@" + text_name)


_BASE, _LARGE = "RoBERTa-wwm-ext-base-chinese", "RoBERTa-wwm-ext-large-chinese"
KNOWN_MODELS = (  # from cn_clip's model_configs
    KnownModel("ViT-B-16", 12, 768, 16, 224, 512, 12, 768, 3072, _BASE),
    KnownModel("ViT-L-14", 24, 1024, 14, 224, 768, 12, 768, 3072, _BASE),
    KnownModel("ViT-L-14-336", 24, 1024, 14, 336, 768, 12, 768, 3072, _BASE),
    KnownModel("ViT-H-14", 32, 1280, 14, 224, 1024, 24, 1024, 4096, _LARGE),
)

# Vision heads by width, from cn_clip's model configs: head width 64, except ViT-H-14 (1280 wide): 80.
VISION_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}
# Text heads by hidden size, from cn_clip's RoBERTa configs.
TEXT_HEADS_BY_HIDDEN = {768: 12, 1024: 16}
FALLBACK_HEAD_WIDTH = 64


@dataclass(frozen=True)
class Architecture:
    """Every size a ``ChineseCLIPConfig`` needs, read off a checkpoint."""

    vision_layers: int
    vision_width: int
    vision_intermediate: int
    vision_heads: int
    patch_size: int
    image_size: int
    text_layers: int
    text_hidden: int
    text_intermediate: int
    text_heads: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    projection_dim: int
    name: str | None = None  # a known model's name, or None for a custom one
    fine_tuned_from: str | None = None  # the known model this one is, but for its image size
    notes: tuple[str, ...] = field(default=())

    @property
    def description(self) -> str:
        """What the model is: a known model's name, one fine-tuned at another image size, or its sizes."""
        if self.name:
            return self.name
        if self.fine_tuned_from:
            return f"{self.fine_tuned_from}, fine-tuned at {self.image_size} px"
        return (
            f"custom (ViT {self.vision_layers} layers × {self.vision_width}, patch {self.patch_size}, "
            f"{self.image_size} px; text {self.text_layers} layers × {self.text_hidden}; "
            f"embed {self.projection_dim})"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.description}

    def to_config(self) -> ChineseCLIPConfig:
        """A ``ChineseCLIPConfig`` with every field that differs from the transformers defaults set."""
        from transformers import ChineseCLIPConfig

        sections = config_sections(self)
        return ChineseCLIPConfig(**sections.pop(""), **sections)


def infer_architecture(
    state_dict: dict[str, torch.Tensor],
    *,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    config_heads: tuple[int, int] | None = None,
    path: str | Path | None = None,
) -> Architecture:
    """Read the architecture off a (prefix-stripped) original state dict.

    Args:
        state_dict: original tensor names (``visual.*``, ``bert.*``, ...) to tensors (only shapes are read).
        vision_heads, text_heads: head counts to use instead of the known-model or fallback ones.
        config_heads: (vision, text) heads of a user's config, used for widths no known model has.
        path: the checkpoint file, named in errors.

    Raises:
        UnsupportedCheckpointError: RN50, or a state dict of another kind of model.
        ArchitectureError: a tensor needed to read the sizes is missing, or layers are numbered with gaps.
    """
    _reject_other_models(state_dict, path)
    shapes = {key: tuple(tensor.shape) for key, tensor in state_dict.items()}
    _require(shapes, path)
    sizes = {entry.attribute: shapes[entry.shown_by][entry.dim] for entry in MODEL_FIELDS if entry.dim is not None}
    for entry in MODEL_FIELDS:
        if entry.shown_by and entry.shown_by.endswith(LAYERS):
            sizes[entry.attribute] = _count_layers(shapes, entry.shown_by.removesuffix(LAYERS), path)
    sizes["image_size"] = _grid(sizes["image_size"], path) * sizes["patch_size"]  # read as positions: 1 + grid²
    notes: list[str] = []
    configured = config_heads or (None, None)
    vision = _heads("vision", sizes["vision_width"], vision_heads, VISION_HEADS_BY_WIDTH, notes, path, configured[0])
    text = _heads("text", sizes["text_hidden"], text_heads, TEXT_HEADS_BY_HIDDEN, notes, path, configured[1])
    arch = Architecture(**sizes, vision_heads=vision, text_heads=text)
    name, fine_tuned_from, name_notes = _match_known(arch)
    known = {"name": name, "fine_tuned_from": fine_tuned_from, "notes": tuple(notes + name_notes)}
    return Architecture(**{**asdict(arch), **known})


def _grid(positions: int, path) -> int:
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ArchitectureError(
            f"visual.positional_embedding has {positions} rows; expected 1 + a square number of patches.", path=path
        )
    return grid


def _reject_other_models(state_dict: dict[str, torch.Tensor], path: str | Path | None) -> None:
    keys = set(state_dict)
    if any(key.startswith(("visual.layer1.", "visual.attnpool.")) for key in keys):
        raise UnsupportedCheckpointError(
            "this is a Chinese-CLIP RN50 (ResNet) checkpoint. transformers has no ResNet vision tower for "
            "Chinese-CLIP (ChineseCLIPVisionModel is a ViT only), so it cannot be converted; "
            "use it with cn_clip directly.",
            path=path,
        )
    has_visual = any(key.startswith("visual.") for key in keys)
    has_bert = any(key.startswith("bert.") for key in keys)
    if has_visual and has_bert:
        return
    if "token_embedding.weight" in keys or any(key.startswith("transformer.resblocks.") for key in keys):
        kind = "an OpenAI CLIP / open_clip state dict (its text tower is a CLIP transformer, not BERT)"
    elif has_bert or any(key.startswith(("embeddings.", "encoder.layer.")) for key in keys):
        kind = "a BERT-only state dict (no visual.* tower)"
    elif any(key.startswith(("text_model.", "vision_model.")) for key in keys):
        kind = "already in transformers format; use `chclip-convert reverse` to go back"
    else:
        kind = "not a Chinese-CLIP model"
    raise UnsupportedCheckpointError(
        f"this checkpoint is {kind}. The converter needs an original Chinese-CLIP ViT checkpoint, "
        "with `visual.*` and `bert.*` tensors.",
        path=path,
    )


def _require(shapes: dict[str, tuple[int, ...]], path) -> None:
    """Every tensor the sizes are read from is there, with as many dimensions as cn_clip gives it."""
    needed = sorted({entry.shown_by for entry in MODEL_FIELDS if entry.dim is not None})
    missing = [key for key in needed if key not in shapes]
    if missing:
        raise ArchitectureError(
            "cannot read the model's sizes: missing tensor(s) " + ", ".join(missing) + ".", path=path
        )
    for key in needed:
        ndim = _NDIM.get(key, 2)
        if len(shapes[key]) != ndim:
            raise ArchitectureError(f"{key} has shape {list(shapes[key])}; expected {ndim} dimensions.", path=path)


def _count_layers(shapes: dict[str, tuple[int, ...]], prefix: str, path) -> int:
    indices = {split_layer_index(key)[1] for key in shapes if key.startswith(prefix)}
    indices.discard(None)
    expected = set(range(max(indices) + 1)) if indices else set()
    if not indices or indices != expected:
        gaps = sorted(expected - indices)
        raise ArchitectureError(
            f"layers under {prefix}* are not numbered 0…N-1: found {sorted(indices)}, missing {gaps}. "
            "Layers were lost or renumbered when the file was edited; re-save it from the training run.",
            path=path,
        )
    return len(indices)


def _heads(
    tower: str, width: int, override: int | None, known: dict[int, int], notes: list[str], path, configured: int | None
) -> int:
    if override is None and width not in known and configured is not None:
        override = configured  # an unknown width: the user's config is the only source of its head count
    if override is not None:
        if override <= 0 or width % override:
            raise ArchitectureError(
                f"{tower} heads override {override} does not divide the {tower} width {width}.", path=path
            )
        if known.get(width, override) != override:
            notes.append(
                f"{tower} heads set to {override} by override (known models of width {width} use {known[width]})."
            )
        return override
    if width in known:
        return known[width]
    if width % FALLBACK_HEAD_WIDTH:
        raise ArchitectureError(
            f"{tower} width {width} matches no known model and is not a multiple of {FALLBACK_HEAD_WIDTH}; "
            f"give the head count with --{tower}-heads.",
            path=path,
        )
    heads = width // FALLBACK_HEAD_WIDTH
    counted = f"{heads} head" + ("s" if heads != 1 else "")
    notes.append(
        f"{tower} width {width} matches no known Chinese-CLIP model: assumed head width "
        f"{FALLBACK_HEAD_WIDTH} ({counted}). Head counts are invisible in the weights; if yours differ, "
        f"pass --{tower}-heads."
    )
    return heads


_SAME_DEPTHS = ("vision_layers", "vision_width", "patch_size", "text_layers", "text_hidden")
_SAME_WIDTHS = ("vision_width", "patch_size", "text_hidden")
_SAME_SHAPES = (*_SAME_DEPTHS, "projection_dim", "text_intermediate")  # all but the image size
_SAME_MODEL = (*_SAME_SHAPES, "image_size")


def _match_known(arch: Architecture) -> tuple[str | None, str | None, list[str]]:
    """The known model ``arch`` is; else the one it is fine-tuned from at another image size; and notes on the
    one it resembles."""

    def matches(model: KnownModel, names: tuple[str, ...]) -> bool:
        return all(getattr(arch, name) == getattr(model, name) for name in names)

    standard_mlp = arch.vision_intermediate == 4 * arch.vision_width
    for model in KNOWN_MODELS:
        if matches(model, _SAME_MODEL) and standard_mlp:
            return model.name, None, []
    for model in KNOWN_MODELS:  # the same model at another image size: only its position embeddings differ
        if matches(model, _SAME_SHAPES) and standard_mlp and arch.image_size != model.image_size:
            said = f"{model.name} fine-tuned at {arch.image_size} px: its position embeddings were interpolated"
            return None, model.name, [f"{said} from {model.image_size} px."]
    for model in KNOWN_MODELS:
        if matches(model, _SAME_WIDTHS):
            return None, None, [f"has the widths of {model.name} with a different depth or image size."]
    return None, None, []


def expected_shapes(config: ChineseCLIPConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors ``ChineseCLIPModel(config)`` saves, without allocating weights."""
    from transformers import ChineseCLIPModel

    with torch.device("meta"):
        model = ChineseCLIPModel(config)
    return {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}


@dataclass(frozen=True)
class ModelField:
    """One size of the model: the :class:`Architecture` attribute, the config field it becomes, the tensor
    whose shape shows it, and the cn_clip ``CLIP`` argument that rebuilds it."""

    attribute: str
    config: str  # "section.field", or a top-level field
    shown_by: str | None  # a tensor; a layer prefix ending in LAYERS for depths; None: invisible in the weights
    dim: int | None = None  # the dimension of shown_by's shape that holds the value
    cn_clip: str | None = None
    cn_clip_value: Callable[[Architecture], int] | None = None  # when the argument is not the attribute itself
    option: str | None = None  # the command-line option that gives an invisible size


LAYERS = "N.*"  # shown_by of a depth: the layers numbered 0…N-1 under that prefix
CONV, WORDS = "visual.conv1.weight", "bert.embeddings.word_embeddings.weight"
_NDIM = {CONV: 4}  # dimensions of the tensors sizes are read from; 2 unless given

MODEL_FIELDS = (
    ModelField(
        "vision_layers", "vision_config.num_hidden_layers", VISION_LAYER.format(i=LAYERS), cn_clip="vision_layers"
    ),
    ModelField("vision_width", "vision_config.hidden_size", CONV, 0, "vision_width"),
    ModelField(
        "vision_intermediate", "vision_config.intermediate_size", f"{VISION_LAYER.format(i=0)}.mlp.c_fc.weight", 0
    ),
    ModelField(
        "vision_heads",
        "vision_config.num_attention_heads",
        None,
        cn_clip="vision_head_width",
        cn_clip_value=lambda arch: arch.vision_width // arch.vision_heads,
        option="--vision-heads",
    ),
    ModelField("patch_size", "vision_config.patch_size", CONV, 2, "vision_patch_size"),
    # read as its number of rows, 1 + (image / patch)²: see infer_architecture
    ModelField("image_size", "vision_config.image_size", "visual.positional_embedding", 0, "image_resolution"),
    ModelField("projection_dim", "projection_dim", "visual.proj", 1, "embed_dim"),
    ModelField(
        "text_layers", "text_config.num_hidden_layers", TEXT_LAYER.format(i=LAYERS), cn_clip="text_num_hidden_layers"
    ),
    ModelField("text_hidden", "text_config.hidden_size", WORDS, 1, "text_hidden_size"),
    ModelField(
        "text_intermediate",
        "text_config.intermediate_size",
        f"{TEXT_LAYER.format(i=0)}.intermediate.dense.weight",
        0,
        "text_intermediate_size",
    ),
    ModelField(
        "text_heads", "text_config.num_attention_heads", None, cn_clip="text_num_attention_heads", option="--text-heads"
    ),
    ModelField("vocab_size", "text_config.vocab_size", WORDS, 0, "vocab_size"),
    ModelField(
        "max_positions",
        "text_config.max_position_embeddings",
        "bert.embeddings.position_embeddings.weight",
        0,
        "text_max_position_embeddings",
    ),
    ModelField(
        "type_vocab_size",
        "text_config.type_vocab_size",
        "bert.embeddings.token_type_embeddings.weight",
        0,
        "text_type_vocab_size",
    ),
)

# Settings every Chinese-CLIP has: config field → value, and the cn_clip arguments that are not sizes.
FIXED_CONFIG = {
    "vision_config.hidden_act": "quick_gelu",
    "vision_config.layer_norm_eps": 1e-5,
    "text_config.hidden_act": "gelu",
    "text_config.layer_norm_eps": 1e-12,
}
FIXED_CN_CLIP = {
    "text_hidden_act": FIXED_CONFIG["text_config.hidden_act"],
    "text_attention_probs_dropout_prob": 0.1,
    "text_hidden_dropout_prob": 0.1,
    "text_initializer_range": 0.02,
}


def config_values(arch: Architecture) -> dict[str, object]:
    """Every config field the architecture sets, as ``"section.field" → value``.

    ``vision_config.projection_dim`` is a copy transformers keeps and ``ChineseCLIPModel`` does not read: set,
    never checked."""
    sizes = {entry.config: getattr(arch, entry.attribute) for entry in MODEL_FIELDS}
    return {**sizes, "vision_config.projection_dim": arch.projection_dim, **FIXED_CONFIG}


def config_sections(arch: Architecture) -> dict[str, dict[str, object]]:
    """:func:`config_values` by section: ``""`` (the top level), ``"text_config"`` and ``"vision_config"``."""
    sections: dict[str, dict[str, object]] = {"": {}, "text_config": {}, "vision_config": {}}
    for name, value in config_values(arch).items():
        section, _, field_name = name.rpartition(".")
        sections[section][field_name] = value
    return sections


def cn_clip_kwargs(arch: Architecture) -> dict:
    """Keyword arguments for cn_clip's ``CLIP`` that rebuild ``arch``."""
    sizes = {
        entry.cn_clip: entry.cn_clip_value(arch) if entry.cn_clip_value else getattr(arch, entry.attribute)
        for entry in MODEL_FIELDS
        if entry.cn_clip
    }
    return {**sizes, **FIXED_CN_CLIP}


def _config_value(config: ChineseCLIPConfig, name: str):
    return functools.reduce(getattr, name.split("."), config)


def check_config(
    config: ChineseCLIPConfig,
    arch: Architecture,
    shapes: dict[str, tuple[int, ...]],
    *,
    heads_overridden: bool = False,
    path: str | Path | None = None,
) -> ChineseCLIPConfig:
    """Check a user's config against the weights; return it with nothing changed if it agrees.

    Raises:
        ConfigMismatchError: listing every field whose value contradicts a tensor shape, every fixed
            Chinese-CLIP setting it changes, and head counts that differ from the known model's.
    """
    problems = []
    for entry in MODEL_FIELDS:
        value, actual = _config_value(config, entry.config), getattr(arch, entry.attribute)
        if entry.shown_by is None or value == actual:
            continue
        shown = shapes.get(entry.shown_by)
        evidence = (
            f"{entry.shown_by} has shape {list(shown)}" if shown else f"the weights have {actual} ({entry.shown_by})"
        )
        problems.append(f"{entry.config} = {value}, but {evidence}: it must be {actual}")
    for name, expected in FIXED_CONFIG.items():
        if _config_value(config, name) != expected:
            problems.append(f"{name} = {_config_value(config, name)!r}; Chinese-CLIP uses {expected!r}")
    if not heads_overridden and arch.name:
        for entry in MODEL_FIELDS:
            value, known = _config_value(config, entry.config), getattr(arch, entry.attribute)
            if entry.option and value != known:
                problems.append(
                    f"{entry.config} = {value}, but {arch.name} has {known} (heads are invisible in shapes; a "
                    f"wrong count gives wrong outputs silently). Pass {entry.option} {value} to force it."
                )
    if problems:
        raise ConfigMismatchError(
            "the given config contradicts the checkpoint's weights (the weights define the sizes: fix the config, "
            "or drop --config and let the converter read them):\n  - " + "\n  - ".join(problems),
            path=path,
        )
    return config

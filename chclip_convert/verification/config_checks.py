"""A folder's settings checked field by field without the original code: ``config.json`` against the config
the checkpoint's weights (and the recorded conversion options) imply, ``preprocessor_config.json`` against
cn_clip's image transform (:func:`chclip_convert.files.assets.image_processor_settings`), ``tokenizer_config.json``
against cn_clip's tokenizer settings.

A difference either fails or carries a note saying why it cannot change what the model computes: a config field
that shapes nothing (:data:`SHAPING_FIELDS` lists those that do), a length the tokenizer does not cap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import ChineseCLIPConfig

from chclip_convert.files.assets import CONTEXT_LENGTH, image_processor_settings, tokenizer_settings
from chclip_convert.names import PREPROCESSOR_FILE, TOKENIZER_CONFIG_FILE

# Fields that say who wrote the file, not how the model computes.
_CONFIG_PROVENANCE = {"transformers_version", "_name_or_path", "_commit_hash"}
ABSENT, PRESENT = "absent", "present"

# How each tower is built and run, as transformers' modeling_chinese_clip.py reads its config.
_TOWER_FIELDS = {
    "hidden_size": "the width of every layer",
    "intermediate_size": "the MLP width",
    "num_hidden_layers": "the depth",
    "num_attention_heads": "how attention splits the width (invisible in the weights)",
    "hidden_act": "the MLP activation",
    "layer_norm_eps": "every LayerNorm",
}
# The config.json fields that decide what a loaded ChineseCLIPModel computes, with what each decides: every field
# transformers' modeling_chinese_clip.py reads to build and run the model, and the two top-level ones
# from_pretrained reads. The modeling code reads nothing else but the initialisers (initializer_range,
# initializer_factor, logit_scale_init_value), which only fill weights a folder does not hold, and which the
# reload check fails on; vision_config.projection_dim is read by nothing (the model takes the top-level one).
# Any other field (a tower's architectures or dtype, generation token ids, output flags, ...) shapes nothing.
SHAPING_FIELDS: dict[str, str] = {
    "architectures": "the class the Auto classes build",
    "dtype": "the dtype from_pretrained loads the weights in by default",
    "projection_dim": "the width of both projections",
    **{f"text_config.{name}": why for name, why in _TOWER_FIELDS.items()},
    "text_config.vocab_size": "the word embedding's rows",
    "text_config.max_position_embeddings": "the position embedding's rows",
    "text_config.type_vocab_size": "the token type embedding's rows",
    "text_config.pad_token_id": "the word embedding's padding row",
    "text_config.hidden_dropout_prob": "dropout in training",
    "text_config.attention_probs_dropout_prob": "attention dropout in training",
    "text_config.chunk_size_feed_forward": "how the MLP is chunked",
    **{f"vision_config.{name}": why for name, why in _TOWER_FIELDS.items()},
    "vision_config.image_size": "the number of patches and positions",
    "vision_config.patch_size": "the patch embedding",
    "vision_config.num_channels": "the patch embedding's input channels",
    "vision_config.attention_dropout": "attention dropout in training",
}
SHAPES_NOTHING = "shapes nothing in the loaded model"
_LEGACY_SUB_CONFIGS = ("text_config", "vision_config")  # transformers 4.2x also wrote each as <name>_dict
_LEGACY_NOTE = (
    "written by transformers 4.2x; transformers reads each over text_config or vision_config, and what it reads "
    "is what was compared"
)


@dataclass(frozen=True)
class FieldDifference:
    """One setting whose value in the folder is not the expected one (``"absent"`` if the file lacks it).
    ``note`` says why the difference cannot change what the model computes; without one, it is a failure."""

    field: str
    folder: Any
    expected: Any
    note: str = ""

    @property
    def fails(self) -> bool:
        return not self.note

    def __str__(self) -> str:
        return f"{self.field}: folder {_show(self.folder)}, expected {_show(self.expected)}"


def compare_config(folder_config: dict[str, Any], expected: ChineseCLIPConfig) -> list[FieldDifference]:
    """Every field of the folder's ``config.json`` (as transformers reads it, defaults filled in, a 4.2x-era
    ``text_config_dict`` / ``vision_config_dict`` over ``text_config`` / ``vision_config``) that differs from
    ``expected``; nested fields are named ``text_config.num_attention_heads`` etc.

    A difference in a field outside :data:`SHAPING_FIELDS` carries a note, as do fields the folder has that
    ``expected`` has not and the legacy ``*_config_dict`` copies. A file transformers refuses (e.g. heads that
    do not divide the width) is compared as written, and is one difference itself, named ``config.json``, if no
    field explains the refusal.
    """
    written = _flatten(_as_read(folder_config))
    try:
        found = _flatten(ChineseCLIPConfig.from_dict(folder_config).to_dict())
        refused = None
    except Exception as error:  # transformers validates configs with assorted exception types
        found, refused = written, " ".join(f"{type(error).__name__}: {error}".split())
    wanted = _flatten(ChineseCLIPConfig.from_dict(expected.to_dict()).to_dict())  # the same normalisation
    differences = [
        FieldDifference(name, found.get(name) if name in written else ABSENT, value, _shaping_note(name))
        for name, value in wanted.items()
        if name.split(".")[-1] not in _CONFIG_PROVENANCE
        and (name in written or refused is None)
        and found.get(name, ABSENT) != value
    ]
    if refused and not any(difference.fails for difference in differences):
        refusal = FieldDifference("config.json", f"refused by transformers ({refused})", "a ChineseCLIPConfig")
        differences.append(refusal)
    return differences + _extra_fields(folder_config, found, wanted)


def _shaping_note(name: str) -> str:
    return "" if name in SHAPING_FIELDS else SHAPES_NOTHING


def _extra_fields(folder_config: dict, found: dict[str, Any], wanted: dict[str, Any]) -> list[FieldDifference]:
    """Noted differences for what the folder holds beyond ``wanted``: the legacy ``*_config_dict`` copies, and
    fields the ChineseCLIP configs do not define (transformers keeps them; nothing reads them)."""
    legacy = [
        FieldDifference(f"{name}_dict", PRESENT, ABSENT, _LEGACY_NOTE)
        for name in _LEGACY_SUB_CONFIGS
        if f"{name}_dict" in folder_config
    ]
    extra = [
        FieldDifference(name, value, ABSENT, f"not a ChineseCLIP config field: {SHAPES_NOTHING}")
        for name, value in found.items()
        if name not in wanted and name.split(".")[-1] not in _CONFIG_PROVENANCE
    ]
    return legacy + extra


def _as_read(settings: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` with each legacy ``<name>_dict`` merged over ``<name>``, for telling which fields a file
    states. (transformers itself builds the sub-config from ``<name>_dict`` alone, defaults filling the rest,
    and uses that; the values compared come from transformers' own config, so only presence is read here.)"""
    read = dict(settings)
    for name in _LEGACY_SUB_CONFIGS:
        override = read.pop(f"{name}_dict", None)
        if isinstance(override, dict):
            read[name] = {**(read.get(name) if isinstance(read.get(name), dict) else {}), **override}
    return read


def compare_preprocessor(folder_settings: dict[str, Any] | None, image_size: int) -> list[FieldDifference]:
    """Every field of ``preprocessor_config.json`` that differs from cn_clip's ``image_transform(image_size)``:
    a square bicubic resize, no center crop, OpenAI's mean and std. Absent fields are differences too: the
    class defaults (shortest-edge resize, center crop) are not cn_clip's."""
    if folder_settings is None:
        return [FieldDifference(PREPROCESSOR_FILE, ABSENT, "cn_clip's image transform")]
    expected = image_processor_settings(image_size)
    return [
        FieldDifference(name, folder_settings.get(name, ABSENT), value)
        for name, value in expected.items()
        if folder_settings.get(name, ABSENT) != value
    ]


# What BertTokenizer assumes for a field tokenizer_config.json leaves out.
_TOKENIZER_DEFAULTS = {
    "do_lower_case": True,
    "do_basic_tokenize": True,
    "tokenize_chinese_chars": True,
    "strip_accents": None,
}


# transformers' stand-in for "no maximum length" (tokenization_utils_base.VERY_LARGE_INTEGER), which it reads for
# a tokenizer_config.json without model_max_length and which older versions wrote out.
UNCAPPED = int(1e30)
UNCAPPED_NOTE = (
    f"the folder caps no length, which transformers reads as 1e30: padding='max_length' then pads nothing unless "
    f"max_length={CONTEXT_LENGTH} is given; verify tokenized at {CONTEXT_LENGTH}, cn_clip's context length"
)


def compare_tokenizer_config(folder_settings: dict[str, Any] | None) -> list[FieldDifference]:
    """Every field of ``tokenizer_config.json`` that changes token ids and differs from cn_clip's tokenizer
    (:func:`chclip_convert.files.assets.tokenizer_settings`): casing, accents, Chinese characters, special tokens,
    maximum length. A field the file lacks counts as BertTokenizer's default.

    A maximum length the file leaves unset (or sets to transformers' 1e30) claims nothing, as in the folders
    transformers 4.2x wrote: a difference with a note, since ids at length 52 are unchanged. Any other length
    than 52 fails: it cuts captions where cn_clip does not."""
    if folder_settings is None:
        return [FieldDifference(TOKENIZER_CONFIG_FILE, ABSENT, "BertTokenizer settings")]
    differences = []
    for name, expected in tokenizer_settings().items():
        value = folder_settings.get(name, _TOKENIZER_DEFAULTS.get(name, ABSENT))
        if isinstance(value, dict) and "content" in value:  # a special token saved as an AddedToken
            value = value["content"]
        if name == "tokenizer_class" and isinstance(value, str):
            value = value.removesuffix("Fast")  # the same tokenizer, as older transformers versions name it
        if value != expected:
            uncapped = name == "model_max_length" and value in (ABSENT, UNCAPPED)
            differences.append(FieldDifference(name, value, expected, UNCAPPED_NOTE if uncapped else ""))
    return differences


def _flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict) and name.endswith("_config"):
            flat.update(_flatten(value, f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


def _show(value: Any) -> str:
    return value if value in (ABSENT, PRESENT) else repr(value)

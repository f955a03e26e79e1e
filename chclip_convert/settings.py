"""A folder's settings checked field by field without the original code: ``config.json`` against the config
the checkpoint's weights (and the recorded conversion options) imply, ``preprocessor_config.json`` against
cn_clip's image transform (:func:`chclip_convert.assets.image_processor_settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import ChineseCLIPConfig

from .assets import PREPROCESSOR_FILE, TOKENIZER_CONFIG_FILE, image_processor_settings, tokenizer_settings

# Fields that say who wrote the file, not how the model computes.
_CONFIG_PROVENANCE = {"transformers_version", "_name_or_path"}
ABSENT = "absent"


@dataclass(frozen=True)
class FieldDifference:
    """One setting whose value in the folder is not the expected one (``"absent"`` if the file lacks it)."""

    field: str
    folder: Any
    expected: Any

    def __str__(self) -> str:
        return f"{self.field}: folder {_show(self.folder)}, expected {_show(self.expected)}"


def compare_config(folder_config: dict[str, Any], expected: ChineseCLIPConfig) -> list[FieldDifference]:
    """Every field of the folder's ``config.json`` (as transformers reads it, defaults filled in) that differs
    from ``expected``; nested fields are named ``text_config.num_attention_heads`` etc.

    A file transformers refuses (e.g. heads that do not divide the width) is compared as written, and is
    one difference itself, named ``config.json``, if no field explains the refusal.
    """
    written = _flatten(folder_config)
    try:
        found = _flatten(ChineseCLIPConfig.from_dict(folder_config).to_dict())
        refused = None
    except Exception as error:  # transformers validates configs with assorted exception types
        found, refused = written, " ".join(f"{type(error).__name__}: {error}".split())
    wanted = ChineseCLIPConfig.from_dict(expected.to_dict()).to_dict()  # the same normalisation on both sides
    differences = [
        FieldDifference(name, found.get(name) if name in written else ABSENT, value)
        for name, value in _flatten(wanted).items()
        if name.split(".")[-1] not in _CONFIG_PROVENANCE
        and (name in written or refused is None)
        and found.get(name, ABSENT) != value
    ]
    if refused and not differences:
        refusal = FieldDifference("config.json", f"refused by transformers ({refused})", "a ChineseCLIPConfig")
        differences.append(refusal)
    return differences


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


def compare_tokenizer_config(folder_settings: dict[str, Any] | None) -> list[FieldDifference]:
    """Every field of ``tokenizer_config.json`` that changes token ids and differs from cn_clip's tokenizer
    (:func:`chclip_convert.assets.tokenizer_settings`): casing, accents, Chinese characters, special tokens,
    maximum length. A field the file lacks counts as BertTokenizer's default."""
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
            differences.append(FieldDifference(name, value, expected))
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
    return value if value == ABSENT else repr(value)

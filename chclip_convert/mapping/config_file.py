"""``config.json`` from the table: the file ``ChineseCLIPConfig.save_pretrained`` writes for an architecture,
made without importing transformers (whose import takes seconds, on the conversion's critical path).

The values that shape the model come from :func:`~chclip_convert.mapping.architecture.config_values`; the rest
are transformers' defaults for ``chinese_clip``, which no Chinese-CLIP model changes. A test compares the file
with transformers' own, byte for byte, for every architecture.
"""

from __future__ import annotations

import json
from importlib.metadata import version

from chclip_convert.mapping.architecture import Architecture, config_sections

ARCHITECTURES = ("ChineseCLIPModel",)
"""The model class ``config.json`` names, as transformers' own ``save_pretrained`` records it."""
DEFAULTS: dict[str, dict[str, object]] = {
    "": {
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "logit_scale_init_value": 2.6592,
        "model_type": "chinese_clip",
    },
    "text_config": {
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "eos_token_id": None,
        "hidden_dropout_prob": 0.1,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "model_type": "chinese_clip_text_model",
        "pad_token_id": 0,
        "type_vocab_size": 2,
    },
    "vision_config": {
        "attention_dropout": 0.0,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "model_type": "chinese_clip_vision_model",
        "num_channels": 3,
    },
}
"""transformers' ``chinese_clip`` defaults that its ``save_pretrained`` writes, by section ("" is the top)."""


def config_dict(arch: Architecture, dtype: str) -> dict[str, object]:
    """The fields of ``config.json`` for ``arch`` with its weights' majority ``dtype`` ("float16", say)."""
    sections = {name: {**DEFAULTS[name], **values} for name, values in config_sections(arch).items()}
    top = sections.pop("")
    return {
        **top, **sections, "architectures": list(ARCHITECTURES), "dtype": dtype,
        "transformers_version": version("transformers"),
    }  # fmt: skip


def config_text(arch: Architecture, dtype: str) -> str:
    """``config.json``'s text for ``arch``, laid out as transformers writes it (sorted keys, 2-space indent)."""
    return json.dumps(config_dict(arch, dtype), indent=2, sort_keys=True) + "\n"

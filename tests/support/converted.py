"""The transformers side: a tiny config for table-level tests, and strict checks of converted folders."""

from __future__ import annotations

from pathlib import Path

import torch

WIDTH, TEXT_WIDTH, EMBED, LAYERS = 8, 12, 4, 2


def small_config():
    """A tiny ``ChineseCLIPConfig`` (``LAYERS`` layers a tower, vision width ``WIDTH``) for table-level tests."""
    from transformers import ChineseCLIPConfig

    return ChineseCLIPConfig(
        text_config={
            "vocab_size": 30,
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 20,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": WIDTH,
            "intermediate_size": 32,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": 2,
            "image_size": 8,
            "patch_size": 4,
        },
        projection_dim=EMBED,
    )


def reload_strictly(folder: Path, **kwargs):
    """``ChineseCLIPModel.from_pretrained(folder)``, failing on any key transformers reports missing, unexpected
    or of another shape: left alone, it fills such keys with fresh random values and only logs a line."""
    from transformers import ChineseCLIPModel

    model, info = ChineseCLIPModel.from_pretrained(folder, output_loading_info=True, **kwargs)
    assert not any(info.values()), f"{folder}: {info}"
    return model


def assert_model_holds(model, source_state: dict[str, torch.Tensor]) -> None:
    """The reloaded ``model`` holds exactly the tensors the mapping table makes from the original ``source_state``.

    One row is left out: on every load, transformers 5 zeroes row ``pad_token_id`` of the word embeddings, also
    when it was loaded (``ChineseCLIPPreTrainedModel._init_weights`` zeroes ``weight[padding_idx]``, a view that
    its guard for loaded tensors does not see). Only [PAD] positions read that row and attention masks them, so
    outputs do not depend on it; the written file holds the source's row (``load_folder_state`` shows it)."""
    from chclip_convert import convert_state_dict

    expected = dict(convert_state_dict(source_state).state_dict)
    state = model.state_dict()
    assert set(state) == set(expected), sorted(set(state) ^ set(expected))
    pad = model.config.text_config.pad_token_id
    words = "text_model.embeddings.word_embeddings.weight"
    keep = torch.arange(expected[words].shape[0]) != pad
    state[words], expected[words] = state[words][keep], expected[words][keep]
    different = [
        key for key in expected if state[key].dtype != expected[key].dtype or not torch.equal(state[key], expected[key])
    ]
    assert not different, different

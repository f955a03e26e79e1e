"""Architecture inference from weights, against cn_clip's own model configs (shapes only, on the meta device)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from cn_clip.clip.model import CLIP
from support.original import REDUCED, Variant, model_kwargs

from chclip_convert import (
    ArchitectureError,
    ConfigMismatchError,
    UnsupportedCheckpointError,
    convert_state_dict,
    infer_architecture,
)
from chclip_convert.mapping.architecture import cn_clip_kwargs
from chclip_convert.verification.model_outputs import original_architecture, write_seeded_original

FULL = {
    "ViT-B-16": Variant("ViT-B-16", "RoBERTa-wwm-ext-base-chinese"),
    "ViT-L-14": Variant("ViT-L-14", "RoBERTa-wwm-ext-base-chinese"),
    "ViT-L-14-336": Variant("ViT-L-14-336", "RoBERTa-wwm-ext-base-chinese"),
    "ViT-H-14": Variant("ViT-H-14", "RoBERTa-wwm-ext-large-chinese"),
}


def meta_state_dict(variant: Variant, **overrides) -> dict[str, torch.Tensor]:
    """cn_clip's CLIP built on the meta device: real names and shapes, no memory."""
    kwargs = {**model_kwargs(variant), **overrides}
    with torch.device("meta"):
        return dict(CLIP(**kwargs).state_dict())


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_known_models_are_recognised(name):
    kwargs = model_kwargs(FULL[name])
    arch = infer_architecture(meta_state_dict(FULL[name]))
    assert arch.name == name
    assert arch.notes == ()
    assert arch.vision_heads == kwargs["vision_width"] // kwargs.get("vision_head_width", 64)
    assert arch.text_heads == kwargs["text_num_attention_heads"]
    assert arch.image_size == kwargs["image_resolution"]
    assert (arch.vision_layers, arch.vision_width, arch.patch_size, arch.projection_dim) == (
        kwargs["vision_layers"],
        kwargs["vision_width"],
        kwargs["vision_patch_size"],
        kwargs["embed_dim"],
    )
    assert (arch.text_layers, arch.text_hidden, arch.text_intermediate, arch.vocab_size) == (
        kwargs["text_num_hidden_layers"],
        kwargs["text_hidden_size"],
        kwargs["text_intermediate_size"],
        kwargs["vocab_size"],
    )


@pytest.mark.parametrize("name", list(FULL))
def test_full_size_known_models_map_completely(name):
    result = convert_state_dict(meta_state_dict(FULL[name]))
    assert result.report.ok, result.report.format_problems()
    config = result.config
    assert config.vision_config.num_attention_heads == (16 if name != "ViT-B-16" else 12)
    assert config.text_config.vocab_size == 21128
    assert config.vision_config.patch_size == (16 if name == "ViT-B-16" else 14)


def test_vit_h_head_width_80_survives_reduced_depth():
    arch = infer_architecture(meta_state_dict(REDUCED["ViT-H-14"]))
    assert (arch.vision_heads, arch.text_heads) == (16, 16)
    assert arch.name is None
    assert any("ViT-H-14" in note for note in arch.notes)


def test_fine_tuned_resolution_read_from_position_embedding():
    arch = infer_architecture(meta_state_dict(FULL["ViT-B-16"], image_resolution=448))
    assert arch.image_size == 448
    assert arch.name is None
    assert "fine-tuned at 448 px" in arch.notes[0]
    assert arch.description == "ViT-B-16, fine-tuned at 448 px"


@pytest.mark.parametrize("override", [{"embed_dim": 768}, {"image_resolution": 448, "embed_dim": 768}])
def test_a_model_with_other_shapes_is_not_called_a_fine_tuned_known_one(override):
    # ViT-B-16's towers with another projection width: not ViT-B-16, at its own size or another
    arch = infer_architecture(meta_state_dict(FULL["ViT-B-16"], **override))
    assert arch.name is None and arch.fine_tuned_from is None
    assert "fine-tuned" not in arch.description and not any("fine-tuned" in note for note in arch.notes)


def test_unknown_width_falls_back_to_head_width_64_and_says_so():
    arch = infer_architecture(meta_state_dict(REDUCED["ViT-B-16"], vision_width=512))
    assert arch.vision_heads == 8
    assert any("assumed head width 64" in note for note in arch.notes)
    assert infer_architecture(meta_state_dict(REDUCED["ViT-B-16"], vision_width=512), vision_heads=4).vision_heads == 4
    with pytest.raises(ArchitectureError, match="does not divide"):
        infer_architecture(meta_state_dict(REDUCED["ViT-B-16"]), vision_heads=7)


def test_rn50_is_refused_clearly():
    state = meta_state_dict(Variant("RN50", "RBT3-chinese"))
    with pytest.raises(UnsupportedCheckpointError, match=r"RN50.*no ResNet vision tower"):
        infer_architecture(state, path="clip_cn_rn50.pt")


def test_other_models_are_named():
    clip_like = {"token_embedding.weight": torch.zeros(2, 2), "visual.proj": torch.zeros(2, 2)}
    with pytest.raises(UnsupportedCheckpointError, match="OpenAI CLIP"):
        infer_architecture(clip_like)
    bert_only = {"bert.embeddings.word_embeddings.weight": torch.zeros(2, 2)}
    with pytest.raises(UnsupportedCheckpointError, match="BERT-only"):
        infer_architecture(bert_only)


def test_layer_gap_is_an_error():
    state = meta_state_dict(REDUCED["ViT-B-16"], vision_layers=3)
    for key in [k for k in state if k.startswith("visual.transformer.resblocks.1.")]:
        del state[key]
    with pytest.raises(ArchitectureError, match=r"missing \[1\]"):
        infer_architecture(state)


def test_user_config_contradicting_shapes_names_field_value_and_shape():
    state = meta_state_dict(FULL["ViT-L-14"])
    config = convert_state_dict(state).config
    config.vision_config.patch_size = 16
    config.text_config.vocab_size = 30522
    with pytest.raises(ConfigMismatchError) as caught:
        convert_state_dict(state, config=config)
    message = str(caught.value)
    assert "vision_config.patch_size = 16, but visual.conv1.weight has shape [1024, 3, 14, 14]" in message
    assert "text_config.vocab_size = 30522" in message and "[21128, 768]" in message


def test_user_config_with_wrong_head_count_needs_an_explicit_override():
    state = meta_state_dict(FULL["ViT-H-14"])
    config = convert_state_dict(state).config
    config.vision_config.num_attention_heads = 20
    with pytest.raises(ConfigMismatchError, match="num_attention_heads = 20, but ViT-H-14 has 16"):
        convert_state_dict(state, config=config)
    forced = convert_state_dict(state, config=config, vision_heads=20)
    assert forced.config.vision_config.num_attention_heads == 20


@pytest.mark.parametrize("name", list(FULL))
def test_cn_clip_arguments_from_the_model_table_match_cn_clips_own_configs(name):
    """The table's cn_clip column rebuilds each released model exactly as cn_clip's model_configs do."""
    original = model_kwargs(FULL[name])
    ours = cn_clip_kwargs(infer_architecture(meta_state_dict(FULL[name])))
    original.setdefault("vision_head_width", 64)  # cn_clip's CLIP default, which ViT-H-14's config overrides
    assert ours == original


def test_the_model_table_names_real_config_fields_tensors_and_every_size():
    """A typo in the table would pass silently (ChineseCLIPConfig takes unknown arguments): every config path
    exists on transformers' config, every tensor on cn_clip's model, and every size of Architecture is there."""
    from dataclasses import fields

    from transformers import ChineseCLIPConfig

    from chclip_convert.mapping.architecture import FIXED_CONFIG, LAYERS, MODEL_FIELDS, Architecture

    config, state = ChineseCLIPConfig(), meta_state_dict(REDUCED["ViT-B-16"])
    for path in [entry.config for entry in MODEL_FIELDS] + list(FIXED_CONFIG):
        section, _, name = path.rpartition(".")
        assert hasattr(getattr(config, section) if section else config, name), path
    for entry in MODEL_FIELDS:
        if entry.shown_by is None:
            assert entry.option, entry  # an invisible size needs an option that gives it
        elif entry.shown_by.endswith(LAYERS):
            assert any(key.startswith(entry.shown_by.removesuffix(LAYERS)) for key in state), entry
        else:
            assert entry.dim < len(state[entry.shown_by].shape), entry
    sizes = {field.name for field in fields(Architecture)} - {"name", "fine_tuned_from", "notes"}
    assert {entry.attribute for entry in MODEL_FIELDS} == sizes


def test_user_config_changing_a_fixed_setting_is_refused():
    state = meta_state_dict(REDUCED["ViT-B-16"])
    config = convert_state_dict(state).config
    config.vision_config.hidden_act = "gelu"
    config.text_config.layer_norm_eps = 1e-5
    with pytest.raises(ConfigMismatchError) as caught:
        convert_state_dict(state, config=config)
    assert "vision_config.hidden_act = 'gelu'; Chinese-CLIP uses 'quick_gelu'" in str(caught.value)
    assert "text_config.layer_norm_eps = 1e-05; Chinese-CLIP uses 1e-12" in str(caught.value)


def test_the_benchmarks_checkpoint_builder_is_cn_clips_own_model(reduced_models, tmp_path):
    """The package's builder (used by the benchmarks) gives, for an architecture read off cn_clip's ViT-B-16,
    exactly the tensors of cn_clip's model from its own config under the same seed (the session's reduced
    ViT-B-16 is built with seed 0)."""
    arch = replace(original_architecture("ViT-B-16"), vision_layers=2, text_layers=2)
    saved = torch.load(write_seeded_original(arch, tmp_path / "b16.pt", seed=0), weights_only=True)
    state = {key.removeprefix("module."): value for key, value in saved["state_dict"].items()}
    expected = reduced_models["ViT-B-16"].state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[key], expected[key]) for key in expected)

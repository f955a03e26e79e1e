"""The mapping table and its ops, checked against a real ChineseCLIPModel's names (never a typed list)."""

from __future__ import annotations

import pytest
import torch
from support.converted import LAYERS, WIDTH, small_config
from transformers import ChineseCLIPModel

from chclip_convert.conversion.state_dict import map_tensors
from chclip_convert.mapping.ops import SPLIT_QKV, TRANSPOSE, Chunk, Concatenate
from chclip_convert.mapping.report import collapse_layers
from chclip_convert.mapping.table import FLASH, RULES, STANDARD, find_reverse_rule, find_rule, split_layer_index


@pytest.fixture(scope="module")
def target_shapes():
    model = ChineseCLIPModel(small_config())
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def test_every_standard_target_is_a_real_model_key_and_every_key_is_covered(target_shapes):
    targets = set()
    for rule in RULES:
        if rule.layout != STANDARD:
            continue
        for index in range(LAYERS) if "{i}" in rule.source else [None]:
            targets.update(rule.expand(index)[1])
    assert targets == set(target_shapes)


def test_flash_rules_reach_the_same_targets_as_standard_ones():
    standard = {t for r in RULES if r.layout == STANDARD for t in r.targets}
    flash = {t for r in RULES if r.layout == FLASH for t in r.targets}
    assert flash and flash <= standard


def distinguishable_original(target_shapes) -> dict[str, torch.Tensor]:
    """An original-format state dict whose every value says where it came from: q, k, v rows hold
    1, 2, 3 (+ layer/100), so an order or layer mistake changes the numbers."""
    state = {}
    for index in range(LAYERS):
        v = f"visual.transformer.resblocks.{index}"
        fused = torch.cat([torch.full((WIDTH, WIDTH), part + index / 100) for part in (1.0, 2.0, 3.0)])
        state[f"{v}.attn.in_proj_weight"] = fused
        state[f"{v}.attn.in_proj_bias"] = fused[:, 0].clone()
    for rule in RULES:
        if rule.layout != STANDARD or "in_proj" in rule.source:
            continue
        for index in range(LAYERS) if "{i}" in rule.source else [None]:
            source, targets = rule.expand(index)
            shape = target_shapes[targets[0]]
            shape = shape[::-1] if rule.op is TRANSPOSE else shape
            state[source] = (
                torch.arange(torch.Size(shape).numel(), dtype=torch.float32).reshape(shape) + sum(map(ord, source)) % 97
            )
    return state


def test_split_keeps_q_k_v_order_and_layers(target_shapes):
    state = distinguishable_original(target_shapes)
    converted, report = map_tensors(state, target_shapes)
    assert report.ok, report.format_problems()
    for index in range(LAYERS):
        for part, value in (("q", 1.0), ("k", 2.0), ("v", 3.0)):
            weight = converted[f"vision_model.encoder.layers.{index}.self_attn.{part}_proj.weight"]
            assert torch.all(weight == value + index / 100)
            bias = converted[f"vision_model.encoder.layers.{index}.self_attn.{part}_proj.bias"]
            assert torch.all(bias == value + index / 100)


def test_transposed_and_renamed_tensors_hold_the_source_values(target_shapes):
    state = distinguishable_original(target_shapes)
    converted, _ = map_tensors(state, target_shapes)
    assert torch.equal(converted["visual_projection.weight"], state["visual.proj"].t())
    assert torch.equal(converted["text_projection.weight"], state["text_projection"].t())
    assert torch.equal(converted["vision_model.pre_layrnorm.bias"], state["visual.ln_pre.bias"])
    key = "text_model.encoder.layer.1.attention.output.LayerNorm.weight"
    assert torch.equal(converted[key], state["bert.encoder.layer.1.attention.output.LayerNorm.weight"])


def test_ops_reverse_exactly():
    fused = torch.randn(9, 4)
    assert torch.equal(SPLIT_QKV.reverse_op.apply(SPLIT_QKV.apply([fused]))[0], fused)
    assert SPLIT_QKV.reverse_op == Concatenate(parts=3, dim=0)
    assert Concatenate(parts=3).reverse_op == Chunk(parts=3)
    matrix = torch.randn(3, 5)
    assert torch.equal(TRANSPOSE.reverse_op.apply(TRANSPOSE.apply([matrix]))[0], matrix)
    with pytest.raises(ValueError, match="equal parts"):
        SPLIT_QKV.apply([torch.randn(10, 4)])


def test_lookup_is_exact():
    assert split_layer_index("bert.encoder.layer.11.output.dense.weight") == (
        "bert.encoder.layer.{i}.output.dense.weight",
        11,
    )
    assert find_rule("visual.transformer.resblocks.0.attn.in_proj_weight")[0].op is SPLIT_QKV
    assert find_rule("visual.transformer.resblocks.0.attn.in_proj_weight_extra") is None
    assert find_rule("bert.pooler.dense.weight") is None
    assert find_rule("module.visual.proj") is None
    rule, index = find_reverse_rule("vision_model.encoder.layers.3.self_attn.q_proj.weight")
    assert (rule.source, index) == ("visual.transformer.resblocks.{i}.attn.in_proj_weight", 3)


def test_collapse_layers():
    keys = [f"a.{i}.w" for i in range(12)] + ["b.0.x", "b.2.x", "c"]
    assert collapse_layers(keys) == ["a.{0...11}.w", "b.{0,2}.x", "c"]


def test_the_flash_layout_is_recognised_by_the_tables_rules_not_by_a_name_fragment():
    from chclip_convert.mapping.table import is_flash_layout

    standard = [
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "bert.encoder.layer.0.attention.self.query.weight",
    ]
    assert not is_flash_layout(standard)
    assert is_flash_layout([*standard, "visual.transformer.resblocks.3.attn.Wqkv.weight"])
    assert is_flash_layout(["bert.encoder.layer.1.attention.self.Wqkv.bias"])
    assert not is_flash_layout(["adapter.Wqkv.weight"])  # a name the table has no rule for

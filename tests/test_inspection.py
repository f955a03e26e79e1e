"""Filtering the key report (inspection.filter_rows), on a report with twelve layers a tower, where layer 1
and layers 10 and 11 share a prefix."""

from __future__ import annotations

import re

import pytest

from chclip_convert.conversion.demo import DEMO_ARCHITECTURE, demo_state_dict
from chclip_convert.conversion.inspection import NameFilterError, filter_rows
from chclip_convert.conversion.state_dict import convert_state_dict


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    """The demo's report: twelve layers a tower, so layer 1 shares a prefix with layers 10 and 11."""
    assert DEMO_ARCHITECTURE.vision_layers >= 12 and DEMO_ARCHITECTURE.text_layers >= 12
    return convert_state_dict(demo_state_dict()).report.rows()


def names(rows: list[dict]) -> list[str]:
    return [f"{row['key']} {row['counterpart']}" for row in rows]


def layer_numbers(rows: list[dict], prefix: str) -> set[int]:
    return {int(number) for name in names(rows) for number in re.findall(rf"{re.escape(prefix)}\.(\d+)\.", name)}


def test_a_layer_number_matches_that_layer_only(rows):
    assert layer_numbers(rows, "resblocks") == set(range(12))
    shown = filter_rows(rows, text="resblocks.1")
    assert layer_numbers(shown, "resblocks") == {1} and layer_numbers(shown, "layers") == {1}
    # Every tensor of vision layer 1, from both sides: each source key and the targets it fills.
    assert len(shown) == len(filter_rows(rows, text=r"(resblocks|encoder\.layers)\.1\.", regex=True))
    assert {row["side"] for row in shown} == {"source", "target"}
    assert layer_numbers(filter_rows(rows, text="layer.1"), "layer") == {1}  # the text tower
    assert layer_numbers(filter_rows(rows, text="resblocks.11"), "resblocks") == {11}


def test_plain_text_is_case_insensitive_and_matches_counterparts(rows):
    fused = "visual.transformer.resblocks.0.attn.in_proj_weight"
    shown = filter_rows(rows, text=fused.upper())
    assert [(row["side"], row["key"]) for row in shown] == [("source", fused)] + [
        ("target", f"vision_model.encoder.layers.0.self_attn.{part}_proj.weight") for part in "kqv"
    ]
    assert all(row["counterpart"] == fused for row in shown[1:])


def test_status_and_name_filters_combine(rows):
    shown = filter_rows(rows, status="transformed", text="resblocks.1")
    assert [row["key"] for row in shown] == [
        "visual.transformer.resblocks.1.attn.in_proj_bias",
        "visual.transformer.resblocks.1.attn.in_proj_weight",
    ]
    assert filter_rows(rows, status="problems") == []
    assert filter_rows(rows, status="all", text="  ") == rows


def test_a_regular_expression_is_searched_as_written(rows):
    shown = filter_rows(rows, text=r"resblocks\.1\d\.ln_1\.weight$", regex=True)
    assert names(shown) == [
        f"visual.transformer.resblocks.{i}.ln_1.weight vision_model.encoder.layers.{i}.layer_norm1.weight"
        for i in (10, 11)
    ] + [
        f"vision_model.encoder.layers.{i}.layer_norm1.weight visual.transformer.resblocks.{i}.ln_1.weight"
        for i in (10, 11)
    ]
    assert filter_rows(rows, text="resblocks.1", regex=True) != filter_rows(rows, text="resblocks.1")


@pytest.mark.parametrize("pattern", ["[layers", "resblocks.(1", "*proj"])
def test_a_bad_regular_expression_is_refused_with_its_reason(rows, pattern):
    with pytest.raises(NameFilterError, match="not a regular expression: "):
        filter_rows(rows, text=pattern, regex=True)
    assert filter_rows(rows, text=pattern) == []  # as plain text it is just a name that matches nothing

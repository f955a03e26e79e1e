"""One name filter for every search (inspection.name_filter): words, each layer-exact, all of which must match one
of a thing's names, original or transformers; or one regular expression. Used by the key grid, the histogram's
search, the comparison's filter and ``chclip-convert inspect --name``; each is checked here on the demo (twelve
layers a tower, so layer 1 shares a prefix with 10 and 11)."""

from __future__ import annotations

import pytest

from chclip_convert.cli.main import main
from chclip_convert.conversion.demo import write_demo_checkpoint
from chclip_convert.conversion.inspection import (
    NameFilterError,
    filter_rows,
    inspect_checkpoint,
    name_filter,
    other_names,
)
from chclip_convert.conversion.pipeline import convert_checkpoint
from chclip_convert.notebook.diff_view import DIFFERS, EQUAL, filter_diff_rows
from chclip_convert.notebook.histogram import HistogramUI

FUSED = "visual.transformer.resblocks.3.attn.in_proj_weight"
Q = "vision_model.encoder.layers.3.self_attn.q_proj.weight"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo checkpoint and the folder it converts into, made once for this module."""
    folder = tmp_path_factory.mktemp("name-search")
    checkpoint = write_demo_checkpoint(folder / "demo")
    return checkpoint, convert_checkpoint(checkpoint, folder / "hf").output_dir


@pytest.fixture(scope="module")
def histogram(demo) -> HistogramUI:
    return HistogramUI(*demo)


@pytest.mark.parametrize(
    ("text", "names", "found"),
    [
        ("resblocks.1", ["visual.transformer.resblocks.1.ln_1.weight"], True),
        ("resblocks.1", ["visual.transformer.resblocks.10.ln_1.weight"], False),  # layer-exact at the end
        ("1.ln_1", ["visual.transformer.resblocks.11.ln_1.weight"], False),  # and at the start
        ("RESBLOCKS.1 ln_1", ["visual.transformer.resblocks.1.ln_1.weight"], True),  # words, any case
        ("resblocks.1 ln_2", ["visual.transformer.resblocks.1.ln_1.weight"], False),  # every word must match
        ("resblocks.3 q_proj", [FUSED, Q], True),  # each word in any of the names
        ("resblocks.3 q_proj", [FUSED], False),
        ("", ["anything"], True),
        ("  ", [], True),
    ],
)
def test_plain_text_is_words_each_layer_exact_in_any_name(text, names, found):
    assert name_filter(text).matches(names) is found


def test_a_regular_expression_is_the_whole_text_and_a_bad_one_is_refused():
    assert name_filter(r"resblocks\.1\d\.ln", regex=True).matches(["visual.transformer.resblocks.10.ln_1.weight"])
    assert not name_filter("ln_1 resblocks", regex=True).matches(["visual.transformer.resblocks.1.ln_1.weight"])
    assert name_filter(r"q_proj\.weight$", regex=True).matches([FUSED, Q])  # $ ends each name, not the last
    with pytest.raises(NameFilterError, match="not a regular expression"):
        name_filter("resblocks.(1", regex=True)
    assert not name_filter("resblocks.(1").matches([FUSED])  # plain text: a name that matches nothing


def test_the_other_naming_comes_from_the_mapping_table():
    assert other_names(FUSED) == tuple(f"vision_model.encoder.layers.3.self_attn.{p}_proj.weight" for p in "qkv")
    assert other_names(Q) == (FUSED,)
    assert other_names("text_model.encoder.layer.3.attention.self.query.bias") == (
        "bert.encoder.layer.3.attention.self.query.bias",
    )
    assert other_names("no.such.key") == ()


def test_the_key_grids_filter_takes_words_over_key_and_counterparts():
    rows = [
        {"key": FUSED, "status": "transformed", "counterpart": ", ".join(other_names(FUSED))},
        {"key": Q, "status": "filled", "counterpart": FUSED},
        {"key": "vision_model.encoder.layers.13.mlp.fc1.bias", "status": "filled", "counterpart": "x.13"},
    ]
    assert filter_rows(rows, text="resblocks.3 q_proj") == rows[:2]
    assert filter_rows(rows, text=r"k_proj\.weight$", regex=True) == rows[:1]
    assert filter_rows(rows, text="layers.3", status="filled") == rows[1:2]
    # a missing target key has no counterpart in the report: the table still names the source it needs
    missing = {"key": "vision_model.encoder.layers.1.mlp.fc2.bias", "status": "missing", "counterpart": ""}
    assert filter_rows([*rows, missing], text="resblocks.1.mlp.c_proj.bias") == [missing]


def test_the_histogram_finds_tensors_by_their_original_name(histogram):
    histogram.search.value = "resblocks.3"
    found = list(histogram.tensor.options)
    assert found and Q in found and all(name.startswith("vision_model.encoder.layers.3.") for name in found)
    assert f"{len(found)} of {len(histogram.names)} tensors" == histogram.count.value
    histogram.search.value = "layers.3 q_proj"  # transformers' names still work
    assert list(histogram.tensor.options) == [Q.replace("weight", "bias"), Q]
    histogram.search.value = "bert.encoder.layer.11.attention.self.query.weight"
    assert list(histogram.tensor.options) == ["text_model.encoder.layer.11.attention.self.query.weight"]


def test_a_histogram_search_with_no_match_clears_the_old_result(histogram):
    histogram.search.value = ""
    histogram.tensor.value = Q
    assert b"<svg" in bytes(histogram.image.value) and Q in histogram.caption.value
    histogram.search.value = "resblocks.99"
    assert list(histogram.tensor.options) == [] and histogram.tensor.value is None
    assert histogram.image.value == b"" and histogram.caption.value == "" and histogram.comparison is None
    said = f"no tensor matches <code>resblocks.99</code> (<b>0</b> of {len(histogram.names)} tensors)"
    assert histogram.count.value == said
    histogram.search.value = "resblocks.3 q_proj"  # found again: drawn again
    assert histogram.tensor.value in (Q, Q.replace("weight", "bias")) and b"<svg" in bytes(histogram.image.value)


def test_inspect_name_finds_rows_by_the_original_name(demo, capsys):
    assert main(["inspect", str(demo[0]), "--name", "resblocks.3 in_proj_weight"]) == 0
    out = capsys.readouterr().out
    keys = [line.split()[4] for line in out.splitlines() if line.startswith(("source ", "target "))]
    assert keys[0] == FUSED and sorted(keys[1:]) == sorted(other_names(FUSED))  # the source and the targets it fills
    total = len(inspect_checkpoint(demo[0]).rows())
    assert f"4 of {total} keys shown (--name resblocks.3 in_proj_weight)" in out
    assert main(["inspect", str(demo[0]), "--name", "resblocks.99"]) == 0
    out = capsys.readouterr().out
    assert f"no key matches: 0 of {total} keys (--name resblocks.99)" in out and "←→" not in out  # no empty table


def test_the_comparisons_filter_accepts_either_naming():
    keys = [Q, "vision_model.encoder.layers.13.self_attn.q_proj.weight", "visual.transformer.resblocks.3.ln_1.bias"]
    rows = [{"key": key, "status": status} for key, status in zip(keys, (EQUAL, DIFFERS, EQUAL), strict=True)]
    assert filter_diff_rows(rows, text="resblocks.3") == [rows[0], rows[2]]  # the original name of row 0 too
    assert filter_diff_rows(rows, text="layers.3") == [rows[0], rows[2]]  # and the transformers name of row 2
    assert filter_diff_rows(rows, text="in_proj_weight") == rows[:2]  # both q_proj weights come from one
    assert filter_diff_rows(rows, text="q_proj", status="not equal") == [rows[1]]

"""The widgets, driven as a person would — set values, click — without a browser, compared with the plain calls."""

from __future__ import annotations

from conftest import assert_model_holds, reload_strictly

from chclip_convert import MappingError, convert_checkpoint
from chclip_convert.checkpoint import load_checkpoint
from chclip_convert.demo import DAMAGE, DEMO_ARCHITECTURE, damaged_copy, demo_state_dict
from chclip_convert.inspection import inspect_checkpoint
from chclip_convert.notebook.widgets import ConvertUI, HistogramUI, KeyInspectorUI
from chclip_convert.weight_stats import compare_weights

DEMO = demo_state_dict()
# The demo's mapping, from its architecture: each vision layer's fused q/k/v weight and bias are split (three
# targets each) and the two projections transposed; every other source key is renamed.
TRANSFORMED = 2 * DEMO_ARCHITECTURE.vision_layers + 2
TARGETS = len(DEMO) + 2 * 2 * DEMO_ARCHITECTURE.vision_layers


def test_convert_ui_converts_and_shows_summary(demo_checkpoint, tmp_path):
    ui = ConvertUI(str(demo_checkpoint), str(tmp_path / "out"))
    assert ui.convert_button.disabled is False and ui.checkpoint_message.value == ""
    ui.convert_button.click()
    assert ui.error is None and ui.summary.output_dir == tmp_path / "out" and ui.summary.report.ok
    assert ui.progress.value == 1.0 and ui.progress.bar_style == "success"
    assert (
        "Converted." in ui.status.value
        and f"{sum(t.numel() for t in DEMO.values()):,}" in ui.status.value
        and f"OK: source keys {len(DEMO) - TRANSFORMED} mapped, {TRANSFORMED} transformed" in ui.status.value
    )
    assert_model_holds(reload_strictly(tmp_path / "out"), load_checkpoint(demo_checkpoint).state_dict)
    # The output now exists: Convert is disabled again until Overwrite is ticked.
    assert ui.convert_button.disabled and "not empty" in ui.output_message.value
    ui.overwrite.value = True
    assert not ui.convert_button.disabled


def test_bad_paths_show_inline_messages_and_disable_convert(demo_checkpoint, tmp_path):
    ui = ConvertUI("", str(tmp_path / "out"))
    assert ui.convert_button.disabled and "Enter the path" in ui.checkpoint_message.value
    ui.checkpoint.value = str(tmp_path / "missing.pt")
    assert ui.convert_button.disabled and "no such file" in ui.checkpoint_message.value
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    ui.checkpoint.value = str(empty)
    assert ui.convert_button.disabled and "empty" in ui.checkpoint_message.value
    ui.checkpoint.value = str(demo_checkpoint)
    ui.output.value = str(demo_checkpoint)
    assert ui.convert_button.disabled and "input checkpoint" in ui.output_message.value
    ui.output.value = str(tmp_path / "fine")
    ui.vocab.value = str(tmp_path / "nope.txt")
    assert ui.convert_button.disabled and "No such vocabulary" in ui.vocab_message.value
    ui.vocab.value = ""
    assert not ui.convert_button.disabled and ui.checkpoint_message.value == ui.output_message.value == ""


def test_convert_ui_shows_conversion_errors_instead_of_tracebacks(demo_checkpoint, tmp_path):
    damaged = damaged_copy(demo_checkpoint)
    ui = ConvertUI(str(damaged), str(tmp_path / "out"))
    ui.convert_button.click()
    assert ui.summary is None and isinstance(ui.error, MappingError) and ui.error.path == damaged
    assert "does not map cleanly" in ui.status.value and DAMAGE["added"] in ui.status.value
    assert "Traceback" not in ui.status.value and ui.progress.bar_style == "danger"
    assert not (tmp_path / "out").exists()


def test_key_inspector_lists_every_key_and_filters(demo_checkpoint):
    report = inspect_checkpoint(damaged_copy(demo_checkpoint))
    ui = KeyInspectorUI(report)
    assert len(ui.rows()) == len(report.sources) + len(report.targets)
    ui.status_filter.value = "problems"
    statuses = {row["status"]: row["key"] for row in ui.rows()}
    assert statuses == {
        "unused": DAMAGE["added"],
        "missing": "vision_model.encoder.layers.1.mlp.fc2.bias",
        "shape_mismatch": "vision_model.post_layernorm.weight",
    }
    assert DAMAGE["added"] in ui.table.value and "<b>3</b>" in ui.count.value
    ui.status_filter.value = "all"
    ui.name_filter.value = "resblocks.1.attn"
    assert ui.rows() and all(
        "resblocks.1.attn" in r["key"] or "resblocks.1.attn" in r["counterpart"] for r in ui.rows()
    )


def test_weight_statistics_flag_exactly_the_damaged_tensors(demo_checkpoint, tmp_path):
    summary = convert_checkpoint(demo_checkpoint, tmp_path / "hf")
    intact = compare_weights(demo_checkpoint, summary.output_dir)
    assert len(intact) == TARGETS and all(c.agrees for c in intact)
    damaged = damaged_copy(demo_checkpoint)
    comparisons = compare_weights(damaged, summary.output_dir)
    flagged = {c.target for c in comparisons if not c.agrees}
    assert flagged == {
        "vision_model.encoder.layers.1.mlp.fc2.bias",  # dropped
        "vision_model.post_layernorm.weight",  # wrong shape
        "text_model.encoder.layer.0.attention.self.query.weight",  # altered values
    }
    ui = HistogramUI(damaged, summary.output_dir, comparisons)
    assert bytes(ui.image.value).lstrip().startswith(b"<?xml") and "differ" in ui.caption.value
    ui.tensor.value = "vision_model.encoder.layers.0.self_attn.v_proj.weight"
    assert "identical values" in ui.caption.value

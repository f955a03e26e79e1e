"""The widgets, driven as a person would — set values, click — without a browser, compared with the plain calls."""

from __future__ import annotations

from support.converted import assert_model_holds, reload_strictly

from chclip_convert import MappingError, convert_checkpoint
from chclip_convert.changes.weight_stats import compare_weights
from chclip_convert.conversion.demo import DAMAGE, DEMO_ARCHITECTURE, damaged_copy, demo_state_dict
from chclip_convert.conversion.inspection import filter_rows, inspect_checkpoint
from chclip_convert.conversion.pipeline import READING
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.mapping.report import FIXES
from chclip_convert.notebook.converter import ConvertUI
from chclip_convert.notebook.histogram import HistogramUI
from chclip_convert.notebook.key_grid import KeyInspectorUI
from chclip_convert.progress import WRITING, Progress

DEMO = demo_state_dict()
# The demo's mapping, from its architecture: each vision layer's fused q/k/v weight and bias are split (three
# targets each) and the two projections transposed; every other source key is renamed.
TRANSFORMED = 2 * DEMO_ARCHITECTURE.vision_layers + 2
TARGETS = len(DEMO) + 2 * 2 * DEMO_ARCHITECTURE.vision_layers


def test_convert_ui_converts_and_shows_summary(demo_checkpoint, tmp_path):
    ui = ConvertUI(str(demo_checkpoint), str(tmp_path / "out"))
    assert ui.convert_button.disabled is False and ui.checkpoint_message.value == ""
    ui.convert_button.click()
    ui.wait()
    assert ui.error is None and ui.summary.output_dir == tmp_path / "out" and ui.summary.report.ok
    assert ui.progress.value == 1.0 and ui.progress.bar_style == "success"
    assert (
        "Converted." in ui.status.value
        and f"{sum(t.numel() for t in DEMO.values()):,}" in ui.status.value
        and f"OK: source keys {len(DEMO) - TRANSFORMED} mapped, {TRANSFORMED} transformed" in ui.status.value
    )
    assert_model_holds(reload_strictly(tmp_path / "out"), load_checkpoint(demo_checkpoint).state_dict)
    # The output now exists and holds this result: said as such (not as an error), with the next steps;
    # Convert is disabled until Overwrite is ticked, which clears the result (it no longer fits the inputs).
    assert ui.convert_button.disabled and "Converted into this folder" in ui.output_message.value
    assert "#b71c1c" not in ui.output_message.value and "03_weight_stats.ipynb" in ui.next_steps.value
    # A Cancel click that arrives after the conversion ended (queued before the button was disabled) changes
    # nothing: the summary stays.
    summary = ui.status.value
    ui._on_cancel_click()
    assert ui.status.value == summary and not ui.task.cancel_requested
    ui.overwrite.value = True
    assert not ui.convert_button.disabled and ui.summary is None and ui.status.value == ui.next_steps.value == ""


def test_a_stage_reported_after_cancel_leaves_cancelling_on_screen(demo_checkpoint, tmp_path):
    ui = ConvertUI(str(demo_checkpoint), str(tmp_path / "out"))
    ui._on_progress(Progress.starting(READING))
    assert "Reading" in ui.status.value
    # Cancel clicked (what its handler does) while the conversion's thread was past its cancel check
    ui.task._cancel.set()
    ui.status.value = "<i>Cancelling…</i>"
    ui._on_progress(Progress(1, 10, "B", WRITING, index=1, count=3))
    assert ui.status.value == "<i>Cancelling…</i>"


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
    assert ui.convert_button.disabled and "no such vocabulary file" in ui.vocab_message.value
    ui.vocab.value = ""
    assert not ui.convert_button.disabled and ui.checkpoint_message.value == ui.output_message.value == ""


def test_convert_ui_shows_conversion_errors_instead_of_tracebacks(demo_checkpoint, tmp_path):
    damaged = damaged_copy(demo_checkpoint)
    ui = ConvertUI(str(damaged), str(tmp_path / "out"))
    ui.convert_button.click()
    ui.wait()
    assert ui.summary is None and isinstance(ui.error, MappingError) and ui.error.path == damaged
    assert "does not map cleanly" in ui.status.value and DAMAGE["added"] in ui.status.value
    assert "Traceback" not in ui.status.value and ui.progress.bar_style == "danger"
    assert not (tmp_path / "out").exists()


def test_key_inspector_lists_every_key_and_filters(demo_checkpoint):
    report = inspect_checkpoint(damaged_copy(demo_checkpoint))
    ui = KeyInspectorUI(report)
    assert len(ui.rows()) == len(ui.grid.df) == len(report.sources) + len(report.targets)
    assert list(ui.grid.df.columns) == ["side", "key", "status", "shape", "dtype", "counterpart", "note"]
    ui.status_filter.value = "problems"
    statuses = {row["status"]: row["key"] for row in ui.rows()}
    assert statuses == {
        "unused": DAMAGE["added"],
        "missing": "vision_model.encoder.layers.1.mlp.fc2.bias",
        "shape_mismatch": "vision_model.post_layernorm.weight",
    }
    width = DEMO_ARCHITECTURE.vision_width  # the damage halves visual.ln_post.weight and adds a 16 × width adapter
    assert ui.grid.df.to_dict("records") == [
        {"side": "source", "key": DAMAGE["added"], "status": "unused", "shape": f"16×{width}", "dtype": "float32",
         "counterpart": "", "note": "no rule maps this name"},
        {"side": "target", "key": "vision_model.encoder.layers.1.mlp.fc2.bias", "status": "missing", "shape": "-",
         "dtype": "", "counterpart": "", "note": FIXES["missing"]},
        {"side": "target", "key": "vision_model.post_layernorm.weight", "status": "shape_mismatch",
         "shape": str(width // 2), "dtype": "float32", "counterpart": "visual.ln_post.weight",
         "note": f"expected shape [{width}]"},
    ]  # fmt: skip
    assert f"<b>3</b> of {len(report.rows())} keys" in ui.count.value


def test_key_inspector_name_filter_takes_whole_layer_numbers_or_a_regex(demo_checkpoint):
    report = inspect_checkpoint(demo_checkpoint)
    ui = KeyInspectorUI(report)
    ui.name_filter.value = "resblocks.1"
    layer_1 = filter_rows(report.rows(), text=r"(resblocks|encoder\.layers)\.1\.", regex=True)
    assert list(ui.grid.df["key"]) == [row["key"] for row in ui.rows()] == [row["key"] for row in layer_1]
    assert {row["side"] for row in ui.rows()} == {"source", "target"}
    ui.status_filter.value = "transformed"
    assert list(ui.grid.df["key"]) == [f"visual.transformer.resblocks.1.attn.in_proj_{p}" for p in ("bias", "weight")]
    ui.status_filter.value, ui.regex.value, ui.name_filter.value = "all", True, r"^visual\.(proj|ln_post\.bias)$"
    shown = ui.grid.df[["key", "counterpart"]].values.tolist()  # a key matches, or its counterpart does
    assert shown == [
        ["visual.ln_post.bias", "vision_model.post_layernorm.bias"],
        ["visual.proj", "visual_projection.weight"],
        ["vision_model.post_layernorm.bias", "visual.ln_post.bias"],
        ["visual_projection.weight", "visual.proj"],
    ]
    ui.name_filter.value = "ln_post.(bias"
    assert ui.rows() == [] and ui.grid.df.empty
    assert "name: not a regular expression: missing ), unterminated subpattern" in ui.count.value
    ui.regex.value = False  # the same text, taken as plain text, is a name that matches nothing
    assert ui.rows() == [] and f"<b>0</b> of {len(report.rows())} keys" in ui.count.value


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

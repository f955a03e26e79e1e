"""Notebook 06's exporter and its views, driven as a person would (set fields, click), without a browser: the
refusals shown under the fields, an export of the demo with its parity table, Cancel leaving nothing behind,
zero-shot by every exported file beside PyTorch, and the latency figure.

The fast tier checks the refusals; exporting (the demo takes a minute on two cores) is in the slow tier.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import pytest
from support.files import tree_sha256
from test_figures_fit import assert_fits

from chclip_convert import convert_checkpoint
from chclip_convert.export import requirements
from chclip_convert.export.latency import PYTORCH, TOWERS, Latency, exported_variants, measure_latency, runtime_name
from chclip_convert.export.writer import FP32, INT8
from chclip_convert.export.zero_shot import zero_shot_logits
from chclip_convert.notebook.captions import AGREES, DISAGREES, RankingComparison
from chclip_convert.notebook.deploy import KEEP_FAILED, REPLACE, ExportUI, export_failure_text
from chclip_convert.notebook.plotting.figures import LATENCY_SIZE
from chclip_convert.notebook.plotting.latency import draw_latency
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS

pytest.importorskip("onnxruntime", reason="the export extra is not installed")


@pytest.fixture
def folder(demo_checkpoint, tmp_path) -> Path:
    return convert_checkpoint(demo_checkpoint, tmp_path / "demo-hf").output_dir


def shown(ui: ExportUI) -> str:
    return ui.message.value + ui.status.value


def test_a_folder_that_is_no_model_is_named_and_export_stays_off(tmp_path):
    (tmp_path / "notes").mkdir()
    ui = ExportUI(tmp_path / "notes")
    assert ui.export_button.disabled
    assert f"{tmp_path / 'notes'}: has no config.json" in ui.message.value
    assert "has no config.json" in ui.outcome()


def test_an_onnx_folder_that_exists_is_replaced_only_when_ticked(folder):
    (folder / "onnx").mkdir()
    (folder / "onnx" / "mine.onnx").write_bytes(b"the user's")
    ui = ExportUI(folder)
    assert ui.export_button.disabled and "exists and is not empty" in ui.message.value
    assert f'Tick "{REPLACE}"' in html.unescape(ui.message.value)  # said as this widget's checkbox
    ui.overwrite.value = True
    assert not ui.export_button.disabled and ui.message.value == ""


def test_without_the_export_extra_it_says_what_to_install(folder, monkeypatch):
    monkeypatch.setattr(requirements, "missing_export_packages", lambda: ["onnxruntime"])
    ui = ExportUI(folder)
    assert ui.export_button.disabled and requirements.INSTALL_HINT in html.unescape(ui.message.value)


def test_the_advice_after_a_failed_check_is_said_as_the_checkbox():
    from chclip_convert.errors import ExportCheckError

    error = ExportCheckError("Nothing was written; pass --keep-failed (keep_failed=True) to keep the files.", path="x")
    assert f'tick "{KEEP_FAILED}"' in export_failure_text(error) and "--keep-failed" not in export_failure_text(error)


def test_the_latency_figure_fits_and_draws_a_line_per_tower_and_runtime():
    runtimes = (PYTORCH, runtime_name(FP32), runtime_name(INT8))
    planted = [  # made-up milliseconds: the layout is what is checked
        Latency(tower, batch, runtime, 10.0 * batch * (index + 1))
        for tower in TOWERS for batch in (1, 4, 8) for index, runtime in enumerate(runtimes)
    ]  # fmt: skip
    from matplotlib.figure import Figure

    figure = Figure(figsize=LATENCY_SIZE)
    lines = draw_latency(figure, planted, machine="AMD EPYC 7B13, 2 cores")
    assert set(lines) == {(tower, runtime) for tower in TOWERS for runtime in runtimes}
    assert list(lines["image", PYTORCH].get_xdata()) == [1, 4, 8]
    assert_fits(figure)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The demo converted, then exported by the widget with the int8 files: (ui, folder)."""
    from chclip_convert.conversion.demo import write_demo_checkpoint

    work = tmp_path_factory.mktemp("deploy")
    folder = convert_checkpoint(write_demo_checkpoint(work / "demo"), work / "demo-hf").output_dir
    ui = ExportUI(folder)
    ui.quantize.value = True
    ui.export_button.click()
    ui.wait()
    return ui, folder


@pytest.mark.slow
def test_the_demo_exports_and_the_table_gives_every_file_its_verdict(exported):
    ui, folder = exported
    assert ui.report is not None and ui.report.ok, ui.outcome()
    names = [f"{graph.name}{suffix}.onnx" for suffix in ("", "_quantized") for graph in TOWERS.values()]
    for name in [*names, "model.onnx", "model_quantized.onnx"]:
        assert (folder / "onnx" / name).is_file() and f"<code>{name}</code>" in ui.table.value
    assert ui.table.value.count("<tr>") == 1 + 6 * 3  # the head, then 6 files × 3 cases (the last against cn_clip)
    assert ui.outcome() == "6 files, each in 3 cases: every check passes"
    assert "vs cn_clip" in ui.table.value
    assert ui.progress.bar_style == "success" and ui.export_button.disabled  # exported here: the result
    assert "Exported here:" in ui.message.value and ui.exported_dir == folder / "onnx"
    again = ExportUI(folder)  # a page opened later finds the export, as a result, not a problem
    assert again.exported_dir == folder / "onnx" and again.export_button.disabled
    assert "Exported here before" in again.message.value and "#b71c1c" not in again.message.value


@pytest.mark.slow
def test_every_exported_model_picks_pytorchs_best_caption(exported):
    ui, folder = exported
    logits = zero_shot_logits(folder, ui.onnx_dir)
    assert list(logits) == [PYTORCH, runtime_name(FP32), runtime_name(INT8)]
    comparison = RankingComparison(SAMPLE_CAPTIONS, logits, reference=PYTORCH)
    assert all(comparison.agrees.values()), logits
    text = repr(comparison)
    assert text.count(AGREES) == 2 and DISAGREES not in text and SAMPLE_CAPTIONS[0] in text


@pytest.mark.slow
def test_latency_is_measured_for_every_tower_batch_and_runtime(exported):
    ui, folder = exported
    assert exported_variants(ui.onnx_dir) == [FP32, INT8]
    figures = measure_latency(folder, ui.onnx_dir, batches=(1, 2), repeats=1)
    expected = {(t, b, r) for t in TOWERS for b in (1, 2) for r in (PYTORCH, runtime_name(FP32), runtime_name(INT8))}
    assert {(f.tower, f.batch, f.runtime) for f in figures} == expected
    assert all(f.milliseconds > 0 for f in figures)


def cancelled_export(exported_folder: Path, tmp_path: Path, stage: str, *, quantize: bool = False) -> tuple:
    """A copy of ``exported_folder`` exported again with Replace ticked, Cancel clicked as soon as the status
    names ``stage``: (ui, folder, the folder's digest before)."""
    folder = tmp_path / "copy-hf"
    shutil.copytree(exported_folder, folder)
    before = tree_sha256(folder)
    ui = ExportUI(folder)
    ui.overwrite.value, ui.quantize.value = True, quantize
    ui.status.observe(lambda change: stage in change.new.lower() and ui.cancel_button.click(), names="value")
    ui.export_button.click()
    ui.wait()
    return ui, folder, before


@pytest.mark.slow
def test_cancel_leaves_the_onnx_folder_as_it_was(exported, tmp_path):
    # Cancel once model.onnx is written and the next file begins: the export stops at the step after.
    ui, folder, before = cancelled_export(exported[1], tmp_path, "exporting text_model.onnx")
    assert ui.task.cancelled and ui.report is None and "Cancelled: nothing was written" in ui.status.value
    assert tree_sha256(folder) == before
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]


@pytest.mark.slow
def test_cancel_during_the_last_checks_still_leaves_the_folder_as_it_was(exported, tmp_path):
    """The checks are steps too: a Cancel while the last file is checked stops before anything moves."""
    ui, folder, before = cancelled_export(exported[1], tmp_path, "checking vision_model_quantized.onnx", quantize=True)
    assert ui.task.cancelled and ui.report is None and tree_sha256(folder) == before

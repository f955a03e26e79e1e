"""ONNX export against the real thing: cn_clip models with seeded weights, converted, exported and run by
onnxruntime beside transformers' PyTorch model; every bad input refused with one error naming its path, and
nothing left behind.

The fast tier exports one narrow ViT-B-16 (full vocabulary, two layers a tower) once, in every variant, and
reads it from several sides; the other architectures at reduced depth and the full-size ViT-B-16 are slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from support.files import tree_sha256
from support.original import FULL_B16, NARROW, REDUCED, build_model, save, tiny_rn50, training_checkpoint

from chclip_convert import (
    ExportCheckError,
    OutputError,
    UnsupportedCheckpointError,
    convert_checkpoint,
    export_onnx,
)
from chclip_convert.cli.main import main
from chclip_convert.export import card, latency, pipeline, requirements, runtime, writer
from chclip_convert.export.graphs import GRAPHS
from chclip_convert.files import output as output_module

onnx = pytest.importorskip("onnx", reason="the export extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra is not installed")

FILES = [graph.file_name(suffix) for graph in GRAPHS for suffix in ("", "_fp16", "_quantized")]


@pytest.fixture(scope="module")
def narrow_checkpoint(tmp_path_factory) -> Path:
    return save(training_checkpoint(build_model(NARROW, seed=21)), tmp_path_factory.mktemp("narrow") / "narrow.pt")


@pytest.fixture(scope="module")
def exported(narrow_checkpoint, tmp_path_factory) -> tuple[Path, int, dict, list[str]]:
    """The narrow checkpoint converted and exported in every variant by the command line: (folder, exit code,
    --report JSON, the graphs traced)."""
    work = tmp_path_factory.mktemp("exported")
    folder, report = work / "narrow-hf", work / "export.json"
    argv = ["export-onnx", str(narrow_checkpoint), str(folder), "--dtype", "float16", "--quantize", "--no-progress"]
    with pytest.MonkeyPatch.context() as patch:
        traced = tracing_recorded(patch)
        code = main([*argv, "--report", str(report)])
    return folder, code, json.loads(report.read_text(encoding="utf-8")), traced


def tracing_recorded(patch: pytest.MonkeyPatch) -> list[str]:
    """The names of the graphs the export traces from here on, in order (the tracing itself unchanged)."""
    traced, real = [], pipeline.export_graph

    def export_graph(model, graph, *args, **kwargs):
        traced.append(graph.name)
        return real(model, graph, *args, **kwargs)

    patch.setattr(pipeline, "export_graph", export_graph)
    return traced


def session(path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_from_a_checkpoint_writes_every_file_verified(exported):
    folder, code, report, traced = exported
    assert code == 0 and report["ok"], report["failures"]
    assert traced == ["model"], "the towers' files are cut from model.onnx, not traced again"
    assert sorted(report["files"]) == sorted(FILES)
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == sorted([*FILES, "export_report.json"])
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()  # transformers.js needs both
    checked = {(check["file"], check["case"]) for check in report["checks"]}
    assert {case for _, case in checked} == {"loading", "batch 1", "batch 3×5", "batch 3×5 vs cn_clip"}
    assert {file for file, _ in checked} == set(FILES)
    assert not list(folder.parent.glob("*chclip-partial*")) and not list(folder.glob("*chclip-partial*"))


def test_inputs_outputs_and_dynamic_axes_are_named_as_transformers_js_expects(exported):
    folder = exported[0]
    for graph in GRAPHS:
        for suffix in ("", "_fp16", "_quantized"):
            model = session(folder / "onnx" / graph.file_name(suffix))
            assert [i.name for i in model.get_inputs()] == list(graph.inputs)
            assert [o.name for o in model.get_outputs()] == list(graph.outputs)
            for given in model.get_inputs():  # symbolic (named) where dynamic, a number where fixed
                for axis, name in graph.dynamic_axes[given.name].items():
                    assert given.shape[axis] == name, (graph.name, given.name, given.shape)
            assert all(
                i.type == ("tensor(float)" if i.name == "pixel_values" else "tensor(int64)") for i in model.get_inputs()
            )
            assert all(o.type == "tensor(float)" for o in model.get_outputs())  # fp16 files keep float32 io
        header = onnx.load(folder / "onnx" / graph.file_name(), load_external_data=False)
        assert max(entry.version for entry in header.opset_import if entry.domain in ("", "ai.onnx")) >= 17


def test_outputs_match_pytorch_at_other_batch_sizes_and_text_lengths(exported):
    from transformers import ChineseCLIPModel

    folder = exported[0]
    model = ChineseCLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(106, 21128, (4, 19), generator=generator)
    mask = torch.ones_like(ids)
    ids[2:, 11:], mask[2:, 11:] = 0, 0  # two captions padded: the mask must be honoured
    pixels = torch.randn(2, 3, 224, 224, generator=generator)
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        image = model.get_image_features(pixel_values=pixels).pooler_output
        both = model(input_ids=ids, attention_mask=mask, pixel_values=pixels)
    onnx_dir = folder / "onnx"
    got_text = session(onnx_dir / "text_model.onnx").run(
        None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    )
    got_image = session(onnx_dir / "vision_model.onnx").run(None, {"pixel_values": pixels.numpy()})
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "pixel_values": pixels.numpy()}
    got_both = session(onnx_dir / "model.onnx").run(None, feeds)
    # float32 on both sides, the same weights: only the order of sums differs (see export.parity.TOLERANCES)
    np.testing.assert_allclose(got_text[0], text.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_image[0], image.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_both[0], both.logits_per_image.numpy(), atol=1e-3)
    assert got_both[0].shape == (2, 4) and got_both[1].shape == (4, 2)
    np.testing.assert_allclose(got_both[2], both.text_embeds.numpy(), atol=1e-5)


@pytest.mark.slow
def test_a_combined_graph_the_cut_does_not_know_has_its_towers_traced_alone(other_folder, tmp_path, monkeypatch):
    """A combined graph the cut does not recognise (a future exporter's) falls back to tracing each tower alone,
    and those files pass the same checks."""
    folder = copy_of(other_folder, tmp_path)
    traced = tracing_recorded(monkeypatch)
    monkeypatch.setattr(pipeline, "derive_tower", lambda *args: False)
    report = export_onnx(folder, compare_original=False)
    assert report.ok and traced == ["model", "text_model", "vision_model"]
    assert {check.file for check in report.checks} == {graph.file_name() for graph in GRAPHS}


def test_the_cut_refuses_a_graph_that_does_not_end_in_the_normalising_division(exported, tmp_path):
    """``text_model.onnx`` ends in the projection itself: no ``Div`` to cut before, so nothing is written."""
    tower = GRAPHS[1]
    assert not writer.derive_tower(exported[0] / "onnx" / tower.file_name(), tower, tmp_path / "cut.onnx")
    assert list(tmp_path.iterdir()) == []


def test_quantized_weights_are_unsigned_where_a_conv_is_as_transformers_js_makes_q8_files(exported):
    """onnxruntime-web has no ConvInteger for signed weights, and signed ones saturate on CPUs without VNNI."""
    onnx_dir = exported[0] / "onnx"
    for graph in GRAPHS:
        model = onnx.load(onnx_dir / graph.file_name("_quantized"))
        integer_ops = [node for node in model.graph.node if node.op_type in ("MatMulInteger", "ConvInteger")]
        initializers = {tensor.name: tensor.data_type for tensor in model.graph.initializer}
        weight_types = {initializers[node.input[1]] for node in integer_ops if node.input[1] in initializers}
        has_conv = any(node.op_type == "ConvInteger" for node in integer_ops)
        assert has_conv == (graph.name != "text_model"), graph.name  # the patch embedding is a Conv
        wanted = onnx.TensorProto.UINT8 if has_conv else onnx.TensorProto.INT8
        assert integer_ops and weight_types == {wanted}, (graph.name, weight_types)


def combined_graph(path: Path, *, image_reads_text: bool) -> Path:
    """A small graph shaped as ``model.onnx`` (its inputs and its towers' outputs, each ``Div(feature, norm)``),
    whose image feature reads ``input_ids`` too when ``image_reads_text``."""
    from onnx import TensorProto, helper

    ins = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["text_batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["text_batch_size", "sequence_length"]),
        helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["image_batch_size", 3]),
    ]
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["ids", "mask"], ["text_feature"]),
        helper.make_node("ReduceL2", ["text_feature"], ["text_norm"], keepdims=1),
        helper.make_node("Div", ["text_feature", "text_norm"], ["text_embeds"]),
        helper.make_node("ReduceMean", ["ids"], ["ids_mean"], keepdims=0),
        helper.make_node("Add" if image_reads_text else "Identity",
                         ["pixel_values", "ids_mean"] if image_reads_text else ["pixel_values"], ["image_feature"]),
        helper.make_node("ReduceL2", ["image_feature"], ["image_norm"], keepdims=1),
        helper.make_node("Div", ["image_feature", "image_norm"], ["image_embeds"]),
    ]  # fmt: skip
    outs = [
        helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, None),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "combined", ins, outs), opset_imports=[helper.make_opsetid("", 18)]
    )
    onnx.save(onnx.shape_inference.infer_shapes(model), path)  # typed throughout, as the exporter's graphs are
    return path


@pytest.mark.parametrize("image_reads_text", [False, True], ids=["towers apart", "image reads input_ids"])
def test_the_cut_keeps_a_tower_apart_or_refuses(image_reads_text, tmp_path):
    """Cut from a combined graph, the image tower reads ``pixel_values`` alone; a graph whose image feature still
    reads another tower's input is refused (the export then traces the tower alone), nothing written."""
    combined = combined_graph(tmp_path / "model.onnx", image_reads_text=image_reads_text)
    vision, text = GRAPHS[2], GRAPHS[1]
    written = writer.derive_tower(combined, vision, tmp_path / "vision_model.onnx")
    assert written is not image_reads_text
    assert (tmp_path / "vision_model.onnx").exists() is written
    if written:
        model = onnx.load(tmp_path / "vision_model.onnx")
        assert [i.name for i in model.graph.input] == ["pixel_values"] and model.graph.output[0].name == "image_embeds"
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch_size"
        onnx.checker.check_model(model, full_check=True)
        assert writer.derive_tower(combined, text, tmp_path / "text_model.onnx")
        cut = session(tmp_path / "text_model.onnx")
        ids = np.array([[1, 2, 3]], dtype=np.int64)
        (got,) = cut.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        np.testing.assert_array_equal(got, ids.astype(np.float32))  # the feature before the division


def test_cases_that_share_their_inputs_share_one_run(exported, monkeypatch):
    """The larger batch is checked against PyTorch and against cn_clip on the same inputs: one run serves both."""
    from chclip_convert.export import parity

    folder = exported[0]
    graph, path = GRAPHS[2], folder / "onnx" / GRAPHS[2].file_name()
    cases = parity.sample_cases(folder)
    cases[parity.original_case(cases)] = cases[list(cases)[-1]]
    own = runtime.open_session(path)
    references = {
        case: {name: torch.from_numpy(value) for name, value in runtime.run_session(own, graph, inputs).items()}
        for case, inputs in cases.items()
    }
    runs, real = [], parity.run_session
    monkeypatch.setattr(parity, "run_session", lambda *args: runs.append(args[2]) or real(*args))
    checks = parity.check_file(path, graph, writer.FP32, cases, references)
    assert len(cases) == 3 and len(runs) == 2 and all(check.ok for check in checks)
    assert {check.case for check in checks} == {"loading", *cases}


def test_folding_the_weights_in_gives_the_model_onnx_reads_from_the_data_file(exported, tmp_path):
    """The inlined file, written as wire format from file to file, parses as the very model onnx loads from the
    external-data file; the data file is gone."""
    import onnx_ir

    path = tmp_path / "text_model.onnx"
    writer.save_ir(onnx_ir.load(exported[0] / "onnx" / "text_model.onnx"), path)
    expected = onnx.load(path)  # onnx's own loader, the weights read from text_model.onnx_data
    assert (tmp_path / "text_model.onnx_data").is_file() and expected.graph.initializer
    writer.inline_weights(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text_model.onnx"]
    assert onnx.load(path).SerializeToString() == expected.SerializeToString()  # the initializers in their order
    assert top_level_fields(path.read_bytes()).count(7) == 1  # one graph: readers that keep the last one see it all


def top_level_fields(data: bytes) -> list[int]:
    """The field numbers of a protobuf message's top-level fields, in the order they lie in ``data``."""

    def varint(at: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            byte = data[at]
            value, shift, at = value | (byte & 0x7F) << shift, shift + 7, at + 1
            if byte < 0x80:
                return value, at

    fields, at = [], 0
    while at < len(data):
        key, at = varint(at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, at = varint(at)
        elif wire == 2:
            size, at = varint(at)
            at += size
        else:  # ModelProto's fields are varints and length-delimited only
            raise AssertionError(f"wire type {wire} at byte {at}")
        fields.append(number)
    return fields


def test_latency_sessions_run_on_torchs_threads_and_checks_on_onnxruntimes_default(exported, monkeypatch):
    opened = []
    real = latency.open_session
    monkeypatch.setattr(
        latency, "open_session", lambda path, threads=None: opened.append(threads) or real(path, threads)
    )
    folder = exported[0]
    latency.measure_latency(folder, folder / "onnx", batches=(1,), repeats=1)
    assert opened == [torch.get_num_threads()] * 6  # a session a tower, for float32, float16 and int8
    text = folder / "onnx" / "text_model.onnx"
    assert runtime.open_session(text, 1).get_session_options().intra_op_num_threads == 1
    assert runtime.open_session(text).get_session_options().intra_op_num_threads == 0  # onnxruntime's default


def test_the_model_card_names_the_files_and_how_to_load_them(exported):
    text = (exported[0] / "README.md").read_text(encoding="utf-8")
    assert text.count(card.BEGIN) == 1 and text.count(card.END) == 1
    assert "Converted from an original Chinese-CLIP checkpoint" in text  # the conversion's card is kept
    assert all(f"`onnx/{name}`" in text for name in FILES)
    assert "ChineseCLIPModel.from_pretrained" in text and "onnxruntime.InferenceSession" in text


def test_exporting_again_replaces_the_card_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# A card\n\nkept\n", encoding="utf-8")
    card.write_section(readme, f"{card.BEGIN}\nfirst\n{card.END}\n")
    card.write_section(readme, f"{card.BEGIN}\nsecond\n{card.END}\n")
    text = readme.read_text(encoding="utf-8")
    assert "kept" in text and "second" in text and "first" not in text and text.count(card.BEGIN) == 1


@pytest.fixture(scope="module")
def other_folder(tmp_path_factory) -> Path:
    """A converted folder of the narrow architecture with other weights (another seed)."""
    work = tmp_path_factory.mktemp("other")
    source = save(training_checkpoint(build_model(NARROW, seed=22)), work / "other.pt")
    convert_checkpoint(source, work / "other-hf")
    return work / "other-hf"


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def test_a_failing_check_names_the_model_output_and_difference_and_leaves_nothing(
    exported, other_folder, tmp_path, monkeypatch, capsys
):
    """The files of one model checked against another's weights: what a wrong export looks like."""
    folder = copy_of(other_folder, tmp_path)

    def copy_exported(model, graph, example, path, *, opset):
        shutil.copy(exported[0] / "onnx" / path.name, path)

    monkeypatch.setattr(pipeline, "export_graph", copy_exported)
    before = tree_sha256(folder)
    with pytest.raises(ExportCheckError) as caught:
        export_onnx(folder)
    message = str(caught.value)
    assert "model.onnx logits_per_image (batch 1): max abs diff / scale" in message and "needs ≤ 0.0001" in message
    assert str(folder / "onnx") in message and caught.value.report.failures
    assert tree_sha256(folder) == before, "a failed export changed the folder"
    assert main(["export-onnx", str(folder), "--no-progress", "--report", str(tmp_path / "r.json")]) == 3
    captured = capsys.readouterr()
    assert "FAIL  model.onnx text_embeds (batch 1): min cosine" in captured.out and "Traceback" not in captured.err
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is False
    assert tree_sha256(folder) == before
    assert main(["export-onnx", str(folder), "--no-progress", "--keep-failed"]) == 3
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == sorted([*FILES[::3], "export_report.json"])
    assert "checks FAILED (kept with --keep-failed)" in (folder / "README.md").read_text(encoding="utf-8")


def test_every_file_is_checked_against_cn_clip_too_and_the_record_names_no_absolute_path(exported, narrow_checkpoint):
    folder = exported[0]
    record = (folder / "onnx" / "export_report.json").read_text(encoding="utf-8")
    saved = json.loads(record)
    against = {check["file"] for check in saved["checks"] if check["case"] == "batch 3×5 vs cn_clip"}
    assert against == set(FILES) and saved["ok"]
    assert saved["paths"] == "relative" and str(narrow_checkpoint.parent.parent) not in record
    assert (folder / "onnx" / saved["original"]["checkpoint"]).resolve() == narrow_checkpoint.resolve()


def unexported_copy(folder: Path, tmp_path: Path, *, source: Path, claim: bool = False, **recorded) -> Path:
    """A copy of the exported ``folder`` without its ONNX files, its record naming ``source`` as its checkpoint
    (with ``claim``, also recording that checkpoint's weights digest, as if converted from it) and ``recorded``'s
    fields."""
    from chclip_convert.conversion.provenance import source_weights_digest

    copy = copy_of(folder, tmp_path)
    shutil.rmtree(copy / "onnx")
    record = json.loads((copy / "conversion_report.json").read_text(encoding="utf-8"))
    record.update(source=str(source), paths="absolute", **recorded)
    if claim:
        record["source_weights_digest"] = source_weights_digest(source)
    (copy / "conversion_report.json").write_text(json.dumps(record), encoding="utf-8")
    return copy


def export_copying(exported_folder: Path, monkeypatch) -> None:
    """Make export write the files exported before (which match ``exported_folder``) instead of tracing again."""

    def copy(model, graph, example, path, *, opset):
        shutil.copy(exported_folder / "onnx" / path.name, path)

    monkeypatch.setattr(pipeline, "export_graph", copy)


def test_files_that_match_the_folder_but_not_its_source_checkpoint_fail_against_cn_clip(
    exported, other_folder, tmp_path, monkeypatch
):
    """A folder whose recorded source is another checkpoint (seed 22) than the one it holds (seed 21): the PyTorch
    checks pass, the cn_clip ones name the difference."""
    other = other_folder.parent / "other.pt"
    folder = unexported_copy(exported[0], tmp_path, source=other, claim=True)
    export_copying(exported[0], monkeypatch)
    with pytest.raises(ExportCheckError) as caught:
        export_onnx(folder)
    failures = caught.value.report.failures
    assert failures and all(check.case == "batch 3×5 vs cn_clip" for check in failures)
    assert f"do not match cn_clip's own model on {other}: model.onnx logits_per_image (batch 3×5 vs cn_clip)" in str(
        caught.value
    )
    assert caught.value.report.original_checkpoint == other


def test_a_source_checkpoint_changed_since_the_conversion_is_not_compared(
    exported, other_folder, tmp_path, monkeypatch
):
    other = other_folder.parent / "other.pt"  # the record names it, its digest is the folder's own checkpoint's
    folder = unexported_copy(exported[0], tmp_path, source=other)
    export_copying(exported[0], monkeypatch)
    report = export_onnx(folder)
    assert (
        report.ok
        and report.original == f"not compared with cn_clip: {other} has changed since the folder was converted from it"
    )


def test_a_folder_cast_at_conversion_is_left_to_verify(exported, narrow_checkpoint, tmp_path, monkeypatch):
    folder = unexported_copy(exported[0], tmp_path, source=narrow_checkpoint, overrides={"dtype": "float16"})
    export_copying(exported[0], monkeypatch)
    report = export_onnx(folder)
    assert report.ok and "cast to float16; `chclip-convert verify` compares them with cn_clip" in report.original


def test_no_original_skips_the_comparison(exported, narrow_checkpoint, tmp_path, monkeypatch):
    folder = unexported_copy(exported[0], tmp_path, source=narrow_checkpoint)
    export_copying(exported[0], monkeypatch)
    assert (
        main(["export-onnx", str(folder), "--no-original", "--no-progress", "--report", str(tmp_path / "r.json")]) == 0
    )
    saved = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert saved["original"] == {"checkpoint": None, "skipped": "not asked for"}
    assert not any(check["case"].endswith("vs cn_clip") for check in saved["checks"])


def test_without_cn_clip_the_report_says_it_was_not_compared(exported, narrow_checkpoint, tmp_path, monkeypatch):
    from chclip_convert.verification import model_outputs

    folder = unexported_copy(exported[0], tmp_path, source=narrow_checkpoint)
    monkeypatch.setattr(model_outputs, "original_problem", lambda: "cn_clip is not installed")
    export_copying(exported[0], monkeypatch)
    report = export_onnx(folder)
    assert report.ok and report.original == "not compared with cn_clip: cn_clip is not installed"
    assert not any("cn_clip" in check.case for check in report.checks)


def assert_refused(argv: list[str], says: str, path: Path, capsys, unchanged: Path) -> None:
    before = tree_sha256(unchanged)
    assert main([*argv, "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and str(path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert tree_sha256(unchanged) == before
    assert not list(unchanged.rglob("*chclip-partial*")) and not list(unchanged.parent.glob("*chclip-partial*"))


def test_a_folder_of_another_model_is_refused(other_folder, tmp_path, capsys):
    folder = copy_of(other_folder, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "clip"}))
    assert_refused(["export-onnx", str(folder)], "model_type 'clip', not 'chinese_clip'", folder, capsys, folder)
    with pytest.raises(UnsupportedCheckpointError, match="not 'chinese_clip'"):
        export_onnx(folder)
    (folder / "config.json").unlink()
    assert_refused(["export-onnx", str(folder)], "has no config.json", folder, capsys, folder)


def test_an_rn50_checkpoint_is_refused_saying_why(tmp_path, capsys):
    model = tiny_rn50()
    source = save(training_checkpoint(model), tmp_path / "run" / "clip_cn_rn50.pt")
    assert_refused(["export-onnx", str(source)], "no ResNet vision tower", source, capsys, source.parent)


def test_an_existing_onnx_folder_is_kept_without_overwrite(other_folder, tmp_path, capsys):
    folder = copy_of(other_folder, tmp_path)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"someone else's")
    assert_refused(["export-onnx", str(folder)], "exists and is not empty", folder / "onnx", capsys, folder)


@pytest.mark.parametrize("complete", [True, False], ids=["onnx/ complete", "onnx/ without its report"])
def test_an_onnx_folder_a_killed_replacement_set_aside_goes_once_its_successor_is_complete(
    complete, exported, tmp_path
):
    """Killed between moving the new ``onnx/`` in and removing the old one: the next run removes the old one when
    the new one holds its report, written last; otherwise the set-aside one may be the only copy, and stays."""
    folder = copy_of(exported[0], tmp_path)
    aside = folder / "onnx.chclip-old"
    shutil.copytree(folder / "onnx", aside)
    if not complete:
        (folder / "onnx" / "export_report.json").unlink()
    with pytest.raises(OutputError, match="exists and is not empty"):
        export_onnx(folder)  # refused, as onnx/ is there; the set-aside folder is seen to first
    assert aside.exists() is not complete
    assert sorted(p.name for p in folder.iterdir() if "chclip" in p.name) == ([] if complete else [aside.name])


def test_an_output_holding_the_folder_is_refused(other_folder, tmp_path, capsys):
    folder = copy_of(other_folder, tmp_path)
    assert_refused(["export-onnx", str(folder), str(tmp_path)], "would hold or replace", tmp_path, capsys, folder)


def test_an_unwritable_output_is_refused_naming_it(other_folder, tmp_path, capsys, monkeypatch):
    # Tests run as root here, which ignores permission bits; the permission check itself is simulated.
    folder = copy_of(other_folder, tmp_path)
    monkeypatch.setattr(output_module.os, "access", lambda path, mode: False)
    assert_refused(["export-onnx", str(folder)], "permission denied", folder / "onnx", capsys, folder)
    with pytest.raises(OutputError, match="permission denied"):
        export_onnx(folder)


def test_without_the_export_extra_one_line_says_what_to_install(tmp_path, capsys, monkeypatch):
    real = requirements.importlib.util.find_spec
    monkeypatch.setattr(requirements.importlib.util, "find_spec", lambda name: None if "onnx" in name else real(name))
    assert main(["export-onnx", str(tmp_path), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "error: exporting to ONNX needs onnx, onnxruntime, onnxscript, which are not installed; install the export "
        "extra: pip install 'chclip-convert[export]'\n"
    )


@pytest.mark.slow  # 0.2–0.4 GB of tensors each, exported three times
@pytest.mark.parametrize("name", list(REDUCED))
def test_every_architecture_exports_and_matches(name, reduced_checkpoints, tmp_path):
    report = export_onnx(reduced_checkpoints[name], tmp_path / "hf")
    assert report.ok, report.to_text()
    assert sorted(report.files) == sorted(graph.file_name() for graph in GRAPHS)


@pytest.mark.slow  # another export of the narrow model
def test_weights_past_the_size_cap_go_beside_the_model_as_transformers_js_names_them(
    narrow_checkpoint, tmp_path, monkeypatch
):
    """As ViT-H-14's 3.8 GB in float32 would: the cap lowered to 1 MB, so every file takes the external-data path."""
    monkeypatch.setattr(writer, "EXTERNAL_DATA_BYTES", 2**20)
    report = export_onnx(narrow_checkpoint, tmp_path / "hf", dtype="float16", quantize=True)
    assert report.ok, report.to_text()
    names = set(report.files)  # each file whose weights pass the cap has them beside it, and no other file is
    assert {f"{graph.file_name()}_data" for graph in GRAPHS} <= names <= {*FILES, *(f"{name}_data" for name in FILES)}
    assert "model_quantized.onnx_data" in names  # int8 takes a quarter of the room: past 4× the cap, beside too
    header = onnx.load(tmp_path / "hf" / "onnx" / "model.onnx", load_external_data=False)
    locations = {
        entry.value for tensor in header.graph.initializer for entry in tensor.external_data if entry.key == "location"
    }
    assert locations == {"model.onnx_data"}


@pytest.mark.slow  # the full-size ViT-B-16: 0.75 GB of weights, every variant
def test_full_size_vit_b_16_exports_in_every_variant(tmp_path):
    source = save(training_checkpoint(build_model(FULL_B16, seed=5)), tmp_path / "vit-b-16.pt")
    report = export_onnx(source, tmp_path / "hf", dtype="float16", quantize=True)
    assert report.ok, report.to_text()
    assert sorted(report.files) == sorted(FILES)
    source.unlink()


TRANSFORMERS_JS = "@huggingface/transformers@4.3.2"
NODE_CACHE = Path(os.environ.get("CHCLIP_NODE_CACHE", Path.home() / ".cache" / "chclip-convert-node"))


def transformers_js() -> Path:
    """A folder whose node_modules holds transformers.js, installed from the npm registry on first use.

    Its dependency onnxruntime-node would fetch CUDA binaries from outside the registry in an install script;
    its CPU binaries ship in the package, so that script is skipped."""
    if not (NODE_CACHE / "node_modules" / "@huggingface" / "transformers" / "package.json").is_file():
        NODE_CACHE.mkdir(parents=True, exist_ok=True)
        (NODE_CACHE / "package.json").write_text('{"name": "chclip-convert-tests", "private": true}\n')
        command = ["npm", "install", "--no-audit", "--no-fund", TRANSFORMERS_JS]
        env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
        subprocess.run(command, cwd=NODE_CACHE, env=env, check=True, capture_output=True, timeout=600)
    return NODE_CACHE


@pytest.mark.slow  # installs transformers.js on first use, then starts Node
def test_transformers_js_loads_the_folder_offline_and_ranks_captions_as_pytorch(exported):
    from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS, SAMPLE_IMAGE, run_converted, sample_image

    folder = exported[0]
    cache = transformers_js()
    script = cache / "rank_captions.mjs"  # beside node_modules, where Node resolves the package from
    shutil.copy(Path(__file__).parent / "support" / "rank_captions.mjs", script)
    command = ["node", str(script), f"{folder.parent}/", folder.name, str(SAMPLE_IMAGE), *SAMPLE_CAPTIONS]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr
    got = np.array(json.loads(result.stdout.splitlines()[-1])["logits"])
    want = run_converted(folder, [sample_image()], SAMPLE_CAPTIONS).logits_per_image[0].numpy()
    # transformers.js resizes with sharp, PyTorch's processor with PIL (both bicubic): pixels differ slightly,
    # so the logits agree to about 1e-3 of their scale, and the ranking is the same.
    np.testing.assert_allclose(got, want, atol=1e-2 * np.abs(want).max())
    assert list(np.argsort(-got)) == list(np.argsort(-want)), (got, want)

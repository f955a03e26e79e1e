"""``export_onnx``: a converted folder (or an original checkpoint, converted first) in, verified ONNX files out.

The files are written into a temporary folder beside the target, checked there by onnxruntime against the
PyTorch model, and moved into place only when every check passes (or ``keep_failed`` says to keep them). From
a checkpoint, the converted folder and its ``onnx/`` are built together in one temporary folder, so a refusal
at any step leaves nothing behind.
"""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.conversion.provenance import recorded_algorithm, source_weights_digest
from chclip_convert.errors import (
    CheckpointReadError,
    ConversionError,
    ExportCheckError,
    OutputError,
    UnsupportedCheckpointError,
)
from chclip_convert.export import card as export_card
from chclip_convert.export.graphs import GRAPHS
from chclip_convert.export.parity import (
    ORIGINAL_SUFFIX,
    check_exported,
    original_case,
    original_references,
    reference_outputs,
    sample_cases,
)
from chclip_convert.export.report import ExportReport
from chclip_convert.export.requirements import require_export_packages
from chclip_convert.export.writer import (
    FP16,
    FP32,
    INT8,
    OPSET,
    Variant,
    derive_tower,
    export_graph,
    inline_weights,
    write_fp16,
    write_int8,
)
from chclip_convert.files.folder import weight_files
from chclip_convert.files.output import atomic_output, check_output_dir, output_lock, output_path
from chclip_convert.files.records import read_json, read_report, recorded_source
from chclip_convert.names import BIN_FILE, CARD_FILE, CONFIG_FILE, EXPORT_REPORT_FILE
from chclip_convert.progress import OnProgress, Progress

ONNX_DIR = "onnx"  # where transformers.js and optimum look for a folder's ONNX files
EXPORT_DTYPES = ("float32", "float16")
DERIVED = {FP16.name: write_fp16, INT8.name: write_int8}  # variant → how it is made from the float32 file


@dataclass(frozen=True)
class Options:
    """What every step of one export is told: the variants, the opset, what to keep, whom to tell."""

    variants: tuple[Variant, ...]
    opset: int
    keep_failed: bool
    compare_original: bool
    progress: OnProgress | None


def export_onnx(
    source: str | Path,
    output: str | Path | None = None,
    *,
    dtype: str = "float32",
    quantize: bool = False,
    overwrite: bool = False,
    keep_failed: bool = False,
    opset: int = OPSET,
    compare_original: bool = True,
    progress: OnProgress | None = None,
) -> ExportReport:
    """Export a Chinese-CLIP model to ONNX files onnxruntime, optimum and transformers.js load, checked.

    Writes ``model.onnx`` (both towers, logits), ``text_model.onnx`` and ``vision_model.onnx`` (the projected
    embeddings), with dynamic batch and text length, and ``export_report.json``; then adds a section on them to
    the folder's ``README.md``. Each file is run by onnxruntime on the packaged photo and captions at batch 1
    and a larger batch, and compared with the PyTorch model (see :mod:`chclip_convert.export.parity`).

    Args:
        source: a converted ``ChineseCLIPModel`` folder, or an original cn_clip checkpoint (converted first).
        output: from a folder, where the ONNX files go (default ``SOURCE/onnx``); from a checkpoint, the
            transformers folder to create, the ONNX files in its ``onnx/`` (default ``<checkpoint stem>-hf``
            beside the checkpoint).
        dtype: ``"float16"`` adds ``*_fp16.onnx`` (float16 inside, float32 inputs and outputs).
        quantize: adds ``*_quantized.onnx``, int8 dynamic quantization by onnxruntime.
        overwrite: replace an existing, non-empty output once the new one is complete and checked.
        keep_failed: keep files that fail their check (the report says which); by default nothing is left.
        opset: the ONNX opset (at least 17; default 18, as optimum exports ``chinese_clip``).
        compare_original: also check every file against cn_clip's own model on the source checkpoint, when
            cn_clip is installed and the checkpoint is at hand, unchanged (the report says why not otherwise).
        progress: called with a :class:`~chclip_convert.progress.Progress` at each step.

    Returns:
        An :class:`~chclip_convert.export.report.ExportReport`; ``ok`` is false only with ``keep_failed``.

    Raises:
        MissingExtraError: onnx, onnxruntime or onnxscript is not installed (the export extra).
        ExportCheckError: a file failed its check; nothing was written (its ``report`` holds every check).
        ConversionError: (a subclass) any other problem with the input or the output; nothing is written.

    With cn_clip installed and the source checkpoint at hand (given, or named by the folder's
    ``conversion_report.json``), every file is checked against cn_clip's own model too. It does not export RN50
    models (transformers has no ResNet tower for Chinese-CLIP).
    """
    started = time.perf_counter()
    require_export_packages()
    options = Options(_variants(dtype, quantize), _opset(opset), keep_failed, compare_original, progress)
    source = Path(source).expanduser()
    if source.is_dir():
        report = _export_folder(source, output, overwrite, options)
    elif source.is_file():
        report = _export_checkpoint(source, output, overwrite, options)
    else:
        raise CheckpointReadError("no such file or folder.", path=source)
    report.seconds = time.perf_counter() - started
    return report


def _variants(dtype: str, quantize: bool) -> tuple[Variant, ...]:
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(EXPORT_DTYPES)}, not {dtype!r}")
    return (FP32, *([FP16] if dtype == "float16" else []), *([INT8] if quantize else []))


def _opset(opset: int) -> int:
    if opset < 17:  # LayerNormalization is an ONNX op from 17 on; below, PyTorch 2's attention does not export
        raise ValueError(f"opset must be 17 or later, not {opset}")
    return opset


def _export_folder(folder: Path, output: str | Path | None, overwrite: bool, options: Options) -> ExportReport:
    """Into ``output`` (default ``folder/onnx``); the section goes into the folder's card, or the output's own."""
    require_chinese_clip_folder(folder)
    target = output_path(output if output is not None else folder / ONNX_DIR)
    if output_path(folder).is_relative_to(target):
        raise OutputError(f"would hold or replace the folder being exported ({folder}); choose another.", path=target)
    inside = target.parent == output_path(folder)
    with output_lock(target):
        check_output_dir(target, input_path=None, overwrite=overwrite)
        with atomic_output(target, overwrite=overwrite) as partial:
            original = _recorded_checkpoint(folder)
            report = _export_into(folder, partial, options, shown=(folder, folder, target, False), original=original)
            if not inside:
                export_card.write_section(partial / CARD_FILE, export_card.onnx_section(report, "."))
    if inside:
        _write_card(folder / CARD_FILE, export_card.onnx_section(report, target.name))
    return report


def _export_checkpoint(checkpoint: Path, output: str | Path | None, overwrite: bool, options: Options) -> ExportReport:
    """Convert into a temporary folder, export into its ``onnx/``, and move the whole into place."""
    from chclip_convert.conversion.pipeline import convert_checkpoint

    target = output_path(output if output is not None else checkpoint.with_name(f"{checkpoint.stem}-hf"))
    with output_lock(target):
        check_output_dir(target, input_path=checkpoint, overwrite=overwrite)
        with atomic_output(target, overwrite=overwrite) as holder:
            convert_checkpoint(checkpoint, holder, progress=options.progress)
            onnx_dir = holder / ONNX_DIR
            with atomic_output(onnx_dir, overwrite=False) as partial:
                shown = (checkpoint, target, target / ONNX_DIR, True)
                report = _export_into(holder, partial, options, shown=shown, original=(checkpoint, ""))
            _write_card(holder / CARD_FILE, export_card.onnx_section(report, ONNX_DIR))
    return report


def require_chinese_clip_folder(folder: Path) -> None:
    """Raise, naming ``folder``, unless it holds a ``chinese_clip`` config.json and weights."""
    config = read_json(folder, CONFIG_FILE)
    if config is None:
        raise UnsupportedCheckpointError(
            "has no config.json, so it is no transformers model folder; give a ChineseCLIPModel folder, or an "
            "original Chinese-CLIP checkpoint (.pt) to convert first.",
            path=folder,
        )
    kind = config.get("model_type")
    if kind != "chinese_clip":
        raise UnsupportedCheckpointError(
            f"config.json is for model_type {kind!r}, not 'chinese_clip'; export-onnx exports ChineseCLIPModel "
            "folders only.",
            path=folder,
        )
    if not weight_files(folder) and not (folder / BIN_FILE).is_file():
        raise CheckpointReadError("holds no weights (*.safetensors or pytorch_model.bin); convert again.", path=folder)


def _export_into(
    folder: Path,
    onnx_dir: Path,
    options: Options,
    *,
    shown: tuple[Path, Path, Path, bool],
    original: tuple[Path | None, str],
) -> ExportReport:
    """Write and check every file in ``onnx_dir``; ``shown`` is (source, folder, output, converted) as the report
    names them; ``original`` the folder's source checkpoint, which cn_clip runs when installed, or why there is
    none. Raises :class:`ExportCheckError` when a check fails, unless ``options.keep_failed``."""
    from transformers import ChineseCLIPModel

    from chclip_convert.verification.model_outputs import quiet_transformers

    quiet_transformers()
    checkpoint, skipped = _original_to_run(folder, *original, options.compare_original)
    files_count = len(GRAPHS) * len(options.variants)
    steps = _Steps(2 * files_count + 1 + (checkpoint is not None), options.progress)
    cases = sample_cases(folder)
    example = cases[list(cases)[-1]]  # the largest case: batch sizes above 1 stay dynamic
    original_outputs = None
    if checkpoint is not None:  # first, so that cn_clip's model and transformers' are never in memory together
        steps.next("running cn_clip's own model on the checkpoint")
        original_outputs, skipped = _run_original(checkpoint, folder)
        checkpoint = checkpoint if original_outputs is not None else None
        gc.collect()
    model = ChineseCLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    references = reference_outputs(model, cases)
    if original_outputs is not None:
        name = original_case(cases)
        cases[name] = example
        for graph in GRAPHS:
            references[graph.name][name] = original_outputs[graph.name]
    combined, *towers = GRAPHS
    steps.next(f"exporting {combined.file_name()}")
    export_graph(model, combined, example, onnx_dir / combined.file_name(), opset=options.opset)
    gc.collect()  # the exporter's copy of the weights, before the towers
    for graph in towers:  # cut from the combined file; traced alone only if its graph is not as expected
        steps.next(f"exporting {graph.file_name()}")
        if not derive_tower(onnx_dir / combined.file_name(), graph, onnx_dir / graph.file_name()):
            export_graph(model, graph, example, onnx_dir / graph.file_name(), opset=options.opset)
            gc.collect()
    files = [(graph, FP32, graph.file_name()) for graph in GRAPHS]
    del model  # the references hold what the checks need; the single files, variants and sessions get its room
    gc.collect()
    for graph in GRAPHS:
        inline_weights(onnx_dir / graph.file_name())
    for variant in options.variants[1:]:
        for graph in GRAPHS:
            steps.next(f"writing {graph.file_name(variant.suffix)}")
            DERIVED[variant.name](onnx_dir / graph.file_name(), onnx_dir / graph.file_name(variant.suffix))
            files.append((graph, variant, graph.file_name(variant.suffix)))
            gc.collect()
    checks = check_exported(
        references, cases, onnx_dir, files, before_each=lambda name: steps.next(f"checking {name} with onnxruntime")
    )
    steps.next("writing the report")  # the last moment Cancel stops the export
    report = ExportReport(
        source=shown[0], folder=shown[1], output_dir=shown[2], converted=shown[3], opset=options.opset, checks=checks,
        original_checkpoint=checkpoint, original_skipped=skipped,
    )  # fmt: skip
    report.kept_failed = not report.ok and options.keep_failed
    if not report.ok and not options.keep_failed:
        raise ExportCheckError(_failure_message(report), path=shown[2], report=report)
    report.files = {path.name: path.stat().st_size for path in sorted(onnx_dir.iterdir()) if path.is_file()}
    _write_json(onnx_dir / EXPORT_REPORT_FILE, report.to_dict(relative_to=shown[2]))  # shared with the folder
    return report


def _recorded_checkpoint(folder: Path) -> tuple[Path | None, str]:
    """The checkpoint the folder's ``conversion_report.json`` names as its source, if it is here and still holds
    the weights the folder was converted from; else ``None`` and why not."""
    try:
        record = read_report(folder) or {}
    except ConversionError as error:
        return None, f"the folder's conversion record cannot be read ({error.message})"
    source = recorded_source(folder, record)
    if source is None or not source.is_file():
        return None, "the folder names no source checkpoint that is here"
    try:  # with the algorithm the folder recorded (v1 for older folders)
        unchanged = record.get("source_weights_digest") == source_weights_digest(source, recorded_algorithm(record))
    except (ConversionError, ValueError) as error:  # ValueError: a digest algorithm this version does not know
        return None, f"its source checkpoint cannot be read, or its digest recomputed ({error})"
    if not unchanged:  # training writes epoch_latest.pt again every epoch
        return None, f"{source} has changed since the folder was converted from it"
    return source, ""


def _original_to_run(folder: Path, checkpoint: Path | None, skipped: str, asked: bool) -> tuple[Path | None, str]:
    """The checkpoint cn_clip's own model runs for the comparison, or ``None`` and why the files are not compared
    with it: not asked, no checkpoint, a folder cast at conversion, or cn_clip missing."""
    from chclip_convert.files.folder import read_overrides
    from chclip_convert.verification.model_outputs import original_problem

    if not asked:
        return None, "not asked for"
    if checkpoint is None:
        return None, skipped
    cast = (read_overrides(folder) or {}).get("dtype")
    if cast in ("float16", "bfloat16"):  # rounded at conversion: verify compares it within that dtype's limits
        return None, f"the folder's weights were cast to {cast}; `chclip-convert verify` compares them with cn_clip"
    problem = original_problem()
    return (None, problem) if problem else (checkpoint, "")


def _run_original(checkpoint: Path, folder: Path) -> tuple[dict | None, str]:
    """cn_clip's outputs for the comparison, or ``None`` and why it could not run (the export goes on without)."""
    try:
        return original_references(checkpoint, folder), ""
    except Exception as error:  # a second opinion that fails is said, and does not stop the export
        return None, f"cn_clip could not run {checkpoint} ({type(error).__name__}: {error})"


def _failure_message(report: ExportReport) -> str:
    shown = report.failures[:5]
    more = f" (and {len(report.failures) - len(shown)} more)" if len(report.failures) > len(shown) else ""
    named = "; ".join(check.describe() for check in shown)
    against_original = [check.case.endswith(ORIGINAL_SUFFIX) for check in report.failures]
    if all(against_original):
        reference = f"cn_clip's own model on {report.original_checkpoint}"
    else:
        reference = "the PyTorch model" + (" (nor cn_clip's own model)" if any(against_original) else "")
    return (
        f"the exported models do not match {reference}: {named}{more}. Nothing was written; pass "
        "--keep-failed (keep_failed=True) to keep the files for a look."
    )


class _Steps:
    """Progress over a known number of steps, each named as it starts."""

    def __init__(self, total: int, progress: OnProgress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def next(self, stage: str) -> None:
        if self.progress is not None:
            self.progress(Progress(done=self.done, total=self.total, unit="steps", stage=stage))
        self.done += 1


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_card(card: Path, section: str) -> None:
    try:
        export_card.write_section(card, section)
    except OSError as error:
        raise OutputError(f"cannot update the model card: {error.strerror or error}.", path=card) from error

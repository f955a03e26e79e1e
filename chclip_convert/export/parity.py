"""Every exported file run by onnxruntime on the packaged photo and captions, against the PyTorch folder and,
when it is at hand, cn_clip's own model on the source checkpoint.

Two cases: batch 1 (the photo, the first caption) and a larger batch (three images, all captions), so that
the dynamic axes are exercised too. Each output is compared with what the PyTorch model gives; the larger
batch is compared with cn_clip's outputs too (:func:`original_references`, the case named with
:data:`ORIGINAL_SUFFIX`). The limits depend on the variant (:data:`TOLERANCES`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from chclip_convert.export.graphs import COMBINED, GRAPHS, TEXT, VISION, GraphSpec, run_torch
from chclip_convert.export.runtime import open_session, run_session
from chclip_convert.export.writer import FP16, FP32, INT8, Variant
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS, folder_processor, model_inputs, sample_image


@dataclass(frozen=True)
class Tolerance:
    """What a variant must match: max abs difference as a fraction of the reference's largest magnitude
    (``None``: reported, not checked), and the least cosine of each embedding with PyTorch's."""

    max_abs: float | None
    min_cosine: float


TOLERANCES = {
    # float32: the same arithmetic as PyTorch in another order (fused attention, other sum orders). Rounding at
    # ~1e-7 a step, grown over up to 32 layers, stays near 1e-6 of the output's scale (for logits, of the logit
    # scale: see compare); 1e-4 leaves room for that and still catches a wrong weight, head count or op, which
    # moves outputs by whole percents.
    FP32.name: Tolerance(max_abs=1e-4, min_cosine=0.99999),
    # float16: weights and activations rounded to an 11-bit significand (~5e-4 relative each), so a few 1e-3 of
    # the scale after a dozen layers; cosines stay above 0.999 where the model is sound.
    FP16.name: Tolerance(max_abs=2e-2, min_cosine=0.999),
    # int8: weights quantized to 256 levels a tensor and activations a batch, an error of about 1% a layer that
    # does not shrink; only the direction of the embeddings is checked, at the 0.99 cosine deployment needs.
    INT8.name: Tolerance(max_abs=None, min_cosine=0.99),
}
EMBEDDINGS = ("text_embeds", "image_embeds")
LOGITS = "logits_per_image"


@dataclass(frozen=True)
class Check:
    """One measured value of one output of one file, in one batch case, and whether it is within its limit."""

    file: str
    variant: str
    case: str
    output: str
    metric: str
    value: float | str
    limit: float | str | None
    ok: bool

    def describe(self) -> str:
        """``model_quantized.onnx image_embeds (batch 3×5): min cosine 0.93, needs ≥ 0.99``."""
        value = f"{self.value:.3g}" if isinstance(self.value, float) else str(self.value)
        need = "" if self.limit is None else f", needs {self.limit}"
        return f"{self.file} {self.output} ({self.case}): {self.metric} {value}{need}"

    def to_dict(self) -> dict:
        return asdict(self)


def sample_cases(folder: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The inputs of each case, made by the folder's own processor (PIL backend, as cn_clip resizes)."""
    processor = folder_processor(folder)
    images = sample_images()
    return {
        "batch 1": model_inputs(processor, images[:1], SAMPLE_CAPTIONS[:1]),
        f"batch {len(images)}×{len(SAMPLE_CAPTIONS)}": model_inputs(processor, images, SAMPLE_CAPTIONS),
    }


def sample_images() -> list:
    """The larger case's images: the photo, its mirror image and a grey copy."""
    from PIL import ImageOps

    photo = sample_image()
    return [photo, ImageOps.mirror(photo), ImageOps.grayscale(photo).convert("RGB")]


def check_file(
    path: Path, graph: GraphSpec, variant: Variant, cases: dict[str, dict], references: dict[str, dict]
) -> list[Check]:
    """Load ``path`` in onnxruntime, check its input and output names, run every case and compare its outputs
    with ``references`` (case → output → PyTorch's tensor). Cases that share their inputs (the larger batch,
    against PyTorch and against cn_clip) share one run."""
    session = open_session(path)
    checks = [_names_check(path.name, variant, graph, session)]
    if not checks[0].ok:
        return checks
    runs: dict[int, dict[str, np.ndarray]] = {}  # id of a case's inputs → the session's outputs on them
    for case, inputs in cases.items():
        if id(inputs) not in runs:
            runs[id(inputs)] = run_session(session, graph, inputs)
        outputs, reference = runs[id(inputs)], references[case]
        scale = logit_scale(reference) if LOGITS in reference else None
        for name in graph.outputs:
            given = scale if name.startswith("logits") else None
            checks += compare(path.name, variant, case, name, outputs[name], reference[name], logit_scale=given)
    return checks


def logit_scale(reference: dict[str, torch.Tensor]) -> float:
    """The factor between ``reference``'s logits and its embeddings' cosines (least squares): the logit a
    cosine of 1 gives, ``exp(logit_scale)`` of the model that made them."""
    cosines = reference["image_embeds"].double() @ reference["text_embeds"].double().T
    logits = reference[LOGITS].double()
    return float((logits * cosines).sum() / (cosines * cosines).sum().clamp_min(1e-30))


def _names_check(file: str, variant: Variant, graph: GraphSpec, session) -> Check:
    found = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    wanted = list(graph.inputs), list(graph.outputs)
    text = f"{', '.join(found[0])} → {', '.join(found[1])}"
    return Check(file, variant.name, "loading", "inputs → outputs", "names", text, None, found == wanted)


def compare(
    file: str,
    variant: Variant,
    case: str,
    output: str,
    got: np.ndarray,
    reference: torch.Tensor,
    *,
    logit_scale: float | None = None,
) -> list[Check]:
    """The checks of one output: shape, max abs difference (relative to the reference's scale), and for the
    embeddings the least row cosine, for the logits whether each image's best caption is the same.

    The scale is the reference's largest magnitude, or for logits the ``logit_scale`` given (:func:`logit_scale`)
    when larger: logits are that factor times a cosine, and a random model's cosines can all be near 0 (a batch
    of one pair, say), which would make a rounding-sized error look large beside the few logits at hand."""
    tolerance = TOLERANCES[variant.name]
    want = reference.float().numpy()
    check = _checker(file, variant, case, output)
    if got.shape != want.shape:
        return [check("shape", str(got.shape), str(want.shape), False)]
    scale = max(float(np.abs(want).max()), logit_scale or 0.0, 1e-12)
    difference = float(np.abs(got.astype(np.float64) - want).max())
    relative = difference / scale
    limit = tolerance.max_abs
    checks = [
        check("max abs diff / scale", relative, None if limit is None else f"≤ {limit:g}", _within(relative, limit))
    ]
    if output in EMBEDDINGS:
        cosine = _min_cosine(got, want)
        checks.append(check("min cosine", cosine, f"≥ {tolerance.min_cosine:g}", cosine >= tolerance.min_cosine))
    if output == LOGITS:
        agree, count = top1_agreement(got, want, difference)
        checks.append(check("top-1 agrees", f"{agree}/{count}", f"{count}/{count}", agree == count))
    return checks


def _checker(file: str, variant: Variant, case: str, output: str):
    def check(metric: str, value, limit, ok: bool) -> Check:
        return Check(file, variant.name, case, output, metric, value, limit, bool(ok))

    return check


def _within(value: float, limit: float | None) -> bool:
    return math.isfinite(value) and (limit is None or value <= limit)


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    cosines = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)
    return float(np.nan_to_num(cosines, nan=-1.0).min())


def top1_agreement(got: np.ndarray, want: np.ndarray, difference: float) -> tuple[int, int]:
    """Images whose best caption agrees, of all. A swap of two captions whose reference scores differ by no more
    than twice the largest logit difference measured is within the variant's error, and counts as agreeing."""
    agree = 0
    for row_got, row_want in zip(got, want, strict=True):
        best, chosen = int(row_want.argmax()), int(row_got.argmax())
        agree += best == chosen or row_want[best] - row_want[chosen] <= 2 * difference
    return agree, len(want)


def reference_outputs(model, cases: dict[str, dict]) -> dict[str, dict[str, dict[str, torch.Tensor]]]:
    """graph name → case → output name → what ``model`` (the folder's float32 ``ChineseCLIPModel``) gives."""
    return {graph.name: {case: run_torch(model, graph, inputs) for case, inputs in cases.items()} for graph in GRAPHS}


ORIGINAL_SUFFIX = " vs cn_clip"  # the case of the larger batch checked against cn_clip's own model


def original_case(cases: dict[str, dict]) -> str:
    """The name of the case that checks the files against cn_clip: the larger batch's, so named."""
    return f"{list(cases)[-1]}{ORIGINAL_SUFFIX}"


def original_references(checkpoint: Path, folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """graph name → output name → what cn_clip's own model gives on the larger case's images and captions, each
    through cn_clip's own preprocessing and tokenizer (:func:`~chclip_convert.verification.model_outputs.
    run_original`), as the exported files name their outputs. Needs cn_clip."""
    from chclip_convert.files.checkpoint import load_checkpoint
    from chclip_convert.files.records import read_json
    from chclip_convert.mapping.architecture import infer_architecture
    from chclip_convert.names import CONFIG_FILE, VOCAB_FILE
    from chclip_convert.verification.model_outputs import run_original

    config = read_json(folder, CONFIG_FILE) or {}
    heads = {  # the folder's own head counts, which the weights cannot show
        f"{tower}_heads": config.get(f"{tower}_config", {}).get("num_attention_heads") for tower in ("vision", "text")
    }
    architecture = infer_architecture(load_checkpoint(checkpoint).state_dict, **heads, path=checkpoint)
    original = run_original(
        checkpoint, folder / VOCAB_FILE, sample_images(), SAMPLE_CAPTIONS, architecture=architecture
    )
    image, text = original.image_features.float(), original.text_features.float()
    logits = original.logits_per_image.float()
    normalised = {
        "image_embeds": image / image.norm(dim=-1, keepdim=True),
        "text_embeds": text / text.norm(dim=-1, keepdim=True),
    }
    return {
        COMBINED: {"logits_per_image": logits, "logits_per_text": logits.T, **normalised},
        TEXT: {"text_embeds": text},
        VISION: {"image_embeds": image},
    }


def check_exported(
    references: dict[str, dict],
    cases: dict[str, dict],
    onnx_dir: Path,
    files: list[tuple[GraphSpec, Variant, str]],
    *,
    before_each: Callable[[str], None] | None = None,
) -> list[Check]:
    """Every file of ``files`` (graph, variant, file name in ``onnx_dir``) against ``references`` (case → outputs:
    :func:`reference_outputs`, and :func:`original_references` under its case), on ``cases``; ``before_each`` is
    told each file's name before it is checked. One onnxruntime session at a time, so memory holds one model's."""
    checks: list[Check] = []
    for graph, variant, name in files:
        if before_each is not None:
            before_each(name)
        checks += check_file(onnx_dir / name, graph, variant, cases, references[graph.name])
    return checks

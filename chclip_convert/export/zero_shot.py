"""Zero-shot classification of the packaged photo by the exported ``model*.onnx`` files, beside PyTorch's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chclip_convert.export.graphs import COMBINED, GRAPH_BY_NAME, run_torch
from chclip_convert.export.latency import PYTORCH, runtime_name
from chclip_convert.export.parity import top1_agreement
from chclip_convert.export.runtime import open_session, run_session
from chclip_convert.export.writer import VARIANTS
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS, folder_processor, model_inputs, sample_image


def zero_shot_logits(
    folder: str | Path, onnx_dir: str | Path | None = None, *, captions: list[str] = SAMPLE_CAPTIONS
) -> dict[str, np.ndarray]:
    """Runtime (``PyTorch``, then ``onnxruntime <variant>`` for each ``model*.onnx`` in ``onnx_dir``, default
    ``folder/onnx``) → the photo's logits over ``captions``, each through the folder's own processor."""
    from transformers import ChineseCLIPModel

    folder = Path(folder)
    onnx_dir = Path(onnx_dir) if onnx_dir is not None else folder / "onnx"
    graph = GRAPH_BY_NAME[COMBINED]
    inputs = model_inputs(folder_processor(folder), [sample_image()], captions)
    model = ChineseCLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    logits = {PYTORCH: run_torch(model, graph, inputs)["logits_per_image"].numpy()[0]}
    for variant in VARIANTS:
        path = onnx_dir / graph.file_name(variant.suffix)
        if path.is_file():
            logits[runtime_name(variant)] = run_session(open_session(path), graph, inputs)["logits_per_image"][0]
    return logits


def best_caption_agrees(logits: np.ndarray, reference: np.ndarray) -> bool:
    """Whether ``logits`` pick the reference's best caption, or one the reference scores within twice their
    largest difference from it (a near tie the runtime's rounding may swap, as the export's check allows)."""
    difference = float(np.abs(logits.astype(np.float64) - reference).max())
    agree, _ = top1_agreement(logits[None], reference[None], difference)
    return agree == 1

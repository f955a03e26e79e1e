"""Exported files run by onnxruntime on the CPU: a session per file, called with inputs by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chclip_convert.export.graphs import GraphSpec


def open_session(path: str | Path):
    """An onnxruntime ``InferenceSession`` of ``path`` on the CPU (the provider every install has)."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def feeds(graph: GraphSpec, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The arrays ``graph``'s session takes, from ``inputs`` (any superset of its input names)."""
    return {name: inputs[name].numpy() for name in graph.inputs}


def run_session(session, graph: GraphSpec, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``graph``'s outputs by name, from one call of ``session`` on ``inputs``."""
    return dict(zip(graph.outputs, session.run(list(graph.outputs), feeds(graph, inputs)), strict=True))

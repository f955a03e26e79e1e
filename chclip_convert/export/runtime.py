"""Exported files run by onnxruntime on the CPU: a session per file, called with inputs by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from chclip_convert.export.graphs import GraphSpec


def open_session(path: str | Path, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` of ``path`` on the CPU (the provider every install has), on
    ``threads`` threads, or onnxruntime's default: one pinned to each core.

    A pinned thread waits for its core while any other process runs there: the latency measurement gives torch's
    count, so that the two libraries are timed alike (on a 2-core machine beside another job, the text tower at
    batch 8 took 0.63 s so, 1.39 s with the default). The checks keep the default their limits were set with."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(graph: GraphSpec, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The arrays ``graph``'s session takes, from ``inputs`` (any superset of its input names)."""
    return {name: inputs[name].numpy() for name in graph.inputs}


def run_session(session, graph: GraphSpec, inputs: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """``graph``'s outputs by name, from one call of ``session`` on ``inputs``."""
    return dict(zip(graph.outputs, session.run(list(graph.outputs), feeds(graph, inputs)), strict=True))

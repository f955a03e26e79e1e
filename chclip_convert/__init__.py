"""Convert original Chinese-CLIP (cn_clip) checkpoints into transformers ``ChineseCLIPModel`` folders.

The public surface, one function per thing the tool does:

- :func:`convert_checkpoint` — a checkpoint file in, a complete folder out; :func:`convert_state_dict` — the
  pure conversion, a state dict in, a state dict and report out;
- :func:`verify_folder` — check a converted folder against its checkpoint (and cn_clip, when installed);
- :func:`reverse_folder` — a transformers folder back to an original checkpoint; :func:`reverse_state_dict`;
- :func:`inspect_checkpoint` — the key-by-key report, also for a checkpoint that does not convert;
- :func:`diff_checkpoints` — any two checkpoints or folders compared tensor by tensor; :func:`measure_drift` — a
  training run's per-layer change by epoch; :func:`convert_epochs` — several checkpoints converted and checked;
- :func:`average_checkpoints` — chosen epochs averaged into one checkpoint; :func:`slim_checkpoint` — a checkpoint
  without its optimizer state;
- :func:`export_onnx` — a folder or checkpoint into verified ONNX files (needs the ``export`` extra);
- :func:`infer_architecture`, :func:`load_config`, :func:`source_weights_digest` — the pieces users reach for;
- the errors, all subclasses of :class:`ConversionError`.

The command line (``chclip-convert convert|verify|reverse|inspect|diff|drift|convert-epochs|average|slim|export-onnx``)
calls the same functions. Names other than the errors are imported on first use, so that ``import chclip_convert``
(and the command line's start) does not wait for torch and transformers. The notebook layer lives in
:mod:`chclip_convert.notebook`.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from chclip_convert.errors import (
    ArchitectureError,
    CheckpointReadError,
    ConfigMismatchError,
    ConversionError,
    ExportCheckError,
    MappingError,
    MissingExtraError,
    OutputError,
    UnsupportedCheckpointError,
)

try:
    __version__ = version("chclip-convert")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"

_LAZY = {
    "Architecture": "chclip_convert.mapping.architecture",
    "infer_architecture": "chclip_convert.mapping.architecture",
    "ConversionResult": "chclip_convert.conversion.state_dict",
    "convert_state_dict": "chclip_convert.conversion.state_dict",
    "CheckpointDiff": "chclip_convert.changes.diff",
    "diff_checkpoints": "chclip_convert.changes.diff",
    "convert_epochs": "chclip_convert.changes.epochs",
    "AverageSummary": "chclip_convert.changes.average",
    "average_checkpoints": "chclip_convert.changes.average",
    "SlimSummary": "chclip_convert.changes.slim",
    "slim_checkpoint": "chclip_convert.changes.slim",
    "Drift": "chclip_convert.changes.drift",
    "measure_drift": "chclip_convert.changes.drift",
    "load_config": "chclip_convert.files.folder",
    "inspect_checkpoint": "chclip_convert.conversion.inspection",
    "convert_checkpoint": "chclip_convert.conversion.pipeline",
    "source_weights_digest": "chclip_convert.conversion.provenance",
    "ConversionReport": "chclip_convert.mapping.report",
    "ReverseSummary": "chclip_convert.conversion.reverse",
    "reverse_folder": "chclip_convert.conversion.reverse",
    "reverse_state_dict": "chclip_convert.conversion.reverse",
    "ConversionSummary": "chclip_convert.conversion.summary",
    "VerifyReport": "chclip_convert.verification.verify",
    "verify_folder": "chclip_convert.verification.verify",
    "ExportReport": "chclip_convert.export.report",
    "export_onnx": "chclip_convert.export.pipeline",
}

if TYPE_CHECKING:
    from chclip_convert.changes.average import AverageSummary, average_checkpoints
    from chclip_convert.changes.diff import CheckpointDiff, diff_checkpoints
    from chclip_convert.changes.drift import Drift, measure_drift
    from chclip_convert.changes.epochs import convert_epochs
    from chclip_convert.changes.slim import SlimSummary, slim_checkpoint
    from chclip_convert.conversion.inspection import inspect_checkpoint
    from chclip_convert.conversion.pipeline import convert_checkpoint
    from chclip_convert.conversion.provenance import source_weights_digest
    from chclip_convert.conversion.reverse import ReverseSummary, reverse_folder, reverse_state_dict
    from chclip_convert.conversion.state_dict import ConversionResult, convert_state_dict
    from chclip_convert.conversion.summary import ConversionSummary
    from chclip_convert.export.pipeline import export_onnx
    from chclip_convert.export.report import ExportReport
    from chclip_convert.files.folder import load_config
    from chclip_convert.mapping.architecture import Architecture, infer_architecture
    from chclip_convert.mapping.report import ConversionReport
    from chclip_convert.verification.verify import VerifyReport, verify_folder


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'chclip_convert' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "Architecture",
    "ArchitectureError",
    "AverageSummary",
    "CheckpointDiff",
    "CheckpointReadError",
    "ConfigMismatchError",
    "ConversionError",
    "ConversionReport",
    "ConversionResult",
    "ConversionSummary",
    "Drift",
    "ExportCheckError",
    "ExportReport",
    "MappingError",
    "MissingExtraError",
    "OutputError",
    "ReverseSummary",
    "SlimSummary",
    "UnsupportedCheckpointError",
    "VerifyReport",
    "__version__",
    "average_checkpoints",
    "convert_checkpoint",
    "convert_epochs",
    "convert_state_dict",
    "diff_checkpoints",
    "export_onnx",
    "infer_architecture",
    "inspect_checkpoint",
    "load_config",
    "measure_drift",
    "reverse_folder",
    "reverse_state_dict",
    "slim_checkpoint",
    "source_weights_digest",
    "verify_folder",
]

"""Convert original Chinese-CLIP (cn_clip) checkpoints into transformers ``ChineseCLIPModel`` folders.

The public surface:

- :func:`convert_checkpoint` — a checkpoint file in, a complete folder out (the CLI's engine);
- :func:`convert_state_dict` — the pure conversion, a state dict in, a state dict and report out;
- :func:`load_checkpoint`, :func:`infer_architecture` — the pieces it is built from;
- :func:`source_weights_digest` — recompute, from a checkpoint, the weights digest a folder records;
- the errors, all subclasses of :class:`ConversionError`.

Names other than the errors are imported on first use, so that ``import chclip_convert`` (and the command
line's start) does not wait for torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import (
    ArchitectureError,
    CheckpointReadError,
    ConfigMismatchError,
    ConversionError,
    MappingError,
    OutputError,
    UnsupportedCheckpointError,
)

__version__ = "0.1.0"

_LAZY = {
    "Architecture": ".architecture",
    "expected_shapes": ".architecture",
    "infer_architecture": ".architecture",
    "SourceCheckpoint": ".checkpoint",
    "load_checkpoint": ".checkpoint",
    "ConversionResult": ".convert",
    "convert_state_dict": ".convert",
    "ConversionSummary": ".pipeline",
    "convert_checkpoint": ".pipeline",
    "load_config": ".pipeline",
    "source_weights_digest": ".provenance",
    "ConversionReport": ".report",
}

if TYPE_CHECKING:
    from .architecture import Architecture, expected_shapes, infer_architecture
    from .checkpoint import SourceCheckpoint, load_checkpoint
    from .convert import ConversionResult, convert_state_dict
    from .pipeline import ConversionSummary, convert_checkpoint, load_config
    from .provenance import source_weights_digest
    from .report import ConversionReport


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'chclip_convert' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Architecture",
    "ArchitectureError",
    "CheckpointReadError",
    "ConfigMismatchError",
    "ConversionError",
    "ConversionReport",
    "ConversionResult",
    "ConversionSummary",
    "MappingError",
    "OutputError",
    "SourceCheckpoint",
    "UnsupportedCheckpointError",
    "convert_checkpoint",
    "convert_state_dict",
    "expected_shapes",
    "infer_architecture",
    "load_checkpoint",
    "load_config",
    "source_weights_digest",
]

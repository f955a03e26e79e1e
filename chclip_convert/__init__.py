"""Convert original Chinese-CLIP (cn_clip) checkpoints into transformers ``ChineseCLIPModel`` folders.

The public surface:

- :func:`convert_checkpoint` — a checkpoint file in, a complete folder out (the CLI's engine);
- :func:`convert_state_dict` — the pure conversion, a state dict in, a state dict and report out;
- :func:`load_checkpoint`, :func:`infer_architecture` — the pieces it is built from;
- the errors, all subclasses of :class:`ConversionError`.
"""

from .architecture import Architecture, expected_shapes, infer_architecture
from .checkpoint import SourceCheckpoint, load_checkpoint
from .convert import ConversionResult, convert_state_dict
from .errors import (
    ArchitectureError,
    CheckpointReadError,
    ConfigMismatchError,
    ConversionError,
    MappingError,
    OutputError,
    UnsupportedCheckpointError,
)
from .pipeline import ConversionSummary, convert_checkpoint, load_config
from .report import ConversionReport

__version__ = "0.1.0"

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
]

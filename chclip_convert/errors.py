"""One small hierarchy of errors, each carrying the file it is about.

Every error the converter raises for bad input is a :class:`ConversionError`; the CLI prints its message
(one paragraph, no traceback) and exits non-zero, and the widgets show it in place of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ConversionError(Exception):
    """Base class: a problem with the user's input or output, explained in ``str(error)``."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class CheckpointReadError(ConversionError):
    """The file cannot be read as a Chinese-CLIP checkpoint (missing, empty, corrupt, not torch)."""


class UnsupportedCheckpointError(ConversionError):
    """The file reads, but holds something this tool cannot convert (RN50, another model, a converted one)."""


class ArchitectureError(ConversionError):
    """The weights do not describe a consistent Chinese-CLIP ViT model."""


class ConfigMismatchError(ConversionError):
    """A user-supplied config contradicts the shapes of the weights."""


class MappingError(ConversionError):
    """Some source keys are unused, target keys missing, or shapes mismatched; ``report`` lists them."""

    def __init__(self, message: str, *, path: str | Path | None = None, report=None) -> None:
        super().__init__(message, path=path)
        self.report = report


class OutputError(ConversionError):
    """The output location is unusable: it exists, is a file, is the input, or cannot be written."""


class MissingExtraError(ConversionError):
    """A task needs packages of an optional extra that is not installed; the message says what to install."""


class ExportCheckError(ConversionError):
    """An exported model failed its check against the PyTorch model; ``report`` holds every check."""

    def __init__(self, message: str, *, path: str | Path | None = None, report=None) -> None:
        super().__init__(message, path=path)
        self.report = report

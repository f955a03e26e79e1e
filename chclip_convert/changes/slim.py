"""A checkpoint without its optimizer state (docs/training-runs.md, "slim"): the checkpoint to keep or share.

cn_clip's training checkpoints hold the Adam moments beside the weights, about three times the model. Slim
writes the same weights — bit-identical, or cast with ``dtype`` — under the same keys (``module.`` prefix
included), with the epoch, step and run name, and nothing else. The input is memory-mapped; an unchanged
tensor's record is copied from file to file, and a cast one goes into the output a slice at a time, so the
optimizer state is never read and memory stays flat.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.conversion.state_dict import DTYPES
from chclip_convert.conversion.summary import describe_training
from chclip_convert.errors import ConversionError
from chclip_convert.files.checkpoint import BARE, MODULE_PREFIX, checkpoint_writer, load_checkpoint
from chclip_convert.files.output import check_output_file, output_lock
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.units import human_size

SLIMMING = "writing the weights"  # the stage of the progress events
RESUME = "--resume {} --reset-optimizer"  # cn_clip's training reads the optimizer state unless told not to


@dataclass(frozen=True)
class SlimSummary:
    """What slim wrote: the file, what it left out, the dtype and the sizes before and after."""

    output: Path
    source: Path
    wrapper: str  # "training dict" or "bare state dict", as the input was
    dropped: tuple[str, ...]  # the input's top-level entries not written (the optimizer, ...)
    tensors: int
    cast: int  # floating-point tensors cast to ``dtype`` (0: every tensor bit-identical)
    dtype: str | None
    training: dict
    bytes_before: int
    bytes_after: int
    seconds: float

    def to_text(self) -> str:
        """The summary the command prints: the sizes first."""
        saved = 1 - self.bytes_after / self.bytes_before if self.bytes_before else 0.0
        weights = "bit-identical" if not self.cast else f"{self.cast} cast to {self.dtype}"
        weights += ", the others bit-identical" if 0 < self.cast < self.tensors else ""
        lines = [
            f"Slimmed {self.source} → {self.output}",
            f"  size:       {human_size(self.bytes_before)} → {human_size(self.bytes_after)} ({saved:.0%} smaller)",
            f"  left out:   {', '.join(self.dropped) or 'nothing (it held only weights)'}",
            f"  tensors:    {self.tensors}, {weights}",
        ]
        if self.wrapper != BARE:
            lines += [
                f"  training:   {describe_training(self.training) or 'none recorded'}",
                f"  resume with cn_clip training: {RESUME.format(self.output)}",
            ]
        lines.append(f"  time:       {self.seconds:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "output": str(self.output), "source": str(self.source), "wrapper": self.wrapper,
            "dropped": list(self.dropped), "tensors": self.tensors, "cast": self.cast, "dtype": self.dtype,
            "training": self.training, "bytes_before": self.bytes_before, "bytes_after": self.bytes_after,
            "seconds": self.seconds,
        }  # fmt: skip


def slim_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    *,
    dtype: str | None = None,
    overwrite: bool = False,
    progress: OnProgress | None = None,
) -> SlimSummary:
    """Write ``checkpoint`` to ``output`` without its optimizer state (and any other entry but the weights,
    epoch, step and run name), atomically.

    Args:
        checkpoint: an original ``.pt`` file (never modified): a training dict, or a bare state dict.
        output: the ``.pt`` file to write; refused if it exists, unless ``overwrite``, or if it is the input.
        dtype: ``None`` keeps every tensor bit-identical; ``"float16"``, ``"bfloat16"`` or ``"float32"`` casts every
            floating-point tensor (cn_clip loads either: ``load_state_dict`` casts into the model's dtype).
        progress: gets the bytes written of all (stage :data:`SLIMMING`).

    Returns:
        A :class:`SlimSummary`. The file loads in cn_clip with ``load_state_dict(strict=True)`` and resumes training
        with ``--resume FILE --reset-optimizer`` (without the flag, cn_clip asks for the optimizer state).

    Raises:
        ConversionError: (a subclass) for an unreadable input or an unusable output; nothing is written.
    """
    started = time.perf_counter()
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    cast = DTYPES[dtype] if dtype is not None else None
    with output_lock(output):  # one writer, from this check to the rename
        target = check_output_file(output, input_files=[checkpoint], overwrite=overwrite)
        source = load_checkpoint(checkpoint)
        total = sum(_nbytes(tensor, cast) for tensor in source.state_dict.values())
        done, changed = 0, 0
        with checkpoint_writer(target, overwrite=overwrite) as writer:
            writer.bare, writer.metadata = source.wrapper == BARE, dict(source.metadata)
            writer.prefix = MODULE_PREFIX if source.had_module_prefix else ""
            for key, tensor in source.state_dict.items():
                casts = _casts(tensor, cast)
                writer.add(key, tensor, cast if casts else None, source=source)
                changed += casts
                done += _nbytes(tensor, cast)
                if progress is not None:
                    progress(Progress(done, total, "B", SLIMMING))
    return SlimSummary(
        output=target, source=source.path, wrapper=source.wrapper, dropped=tuple(source.skipped),
        tensors=len(source.state_dict), cast=changed, dtype=dtype, training=dict(source.metadata),
        bytes_before=source.path.stat().st_size, bytes_after=target.stat().st_size,
        seconds=time.perf_counter() - started,
    )  # fmt: skip


def _casts(tensor: torch.Tensor, cast: torch.dtype | None) -> bool:
    return cast is not None and tensor.is_floating_point() and tensor.dtype != cast


def _nbytes(tensor: torch.Tensor, cast: torch.dtype | None) -> int:
    return math.prod(tensor.shape) * (cast.itemsize if _casts(tensor, cast) else tensor.dtype.itemsize)

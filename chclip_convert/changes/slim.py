"""A checkpoint without its optimizer state (docs/training-runs.md, "slim"): the checkpoint to keep or share.

cn_clip's training checkpoints hold the Adam moments beside the weights, about three times the model. Slim
writes the same weights — bit-identical, or cast with ``dtype`` — under the same keys (``module.`` prefix
included), with the epoch, step and run name, and nothing else. ``float16`` is cn_clip's own fp16 layout, as its
``convert_weights`` leaves a model (:mod:`chclip_convert.mapping.precision`): some tensors stay float32. The input
is memory-mapped; an unchanged tensor's record is copied from file to file, and a cast one goes into the output a
slice at a time, so the optimizer state is never read and memory stays flat. Where every tensor stays as it is
and fills a record of its own (as training saves them), the file's index is read without torch
(:func:`~chclip_convert.files.checkpoint.index_checkpoint`), and torch is not even imported: the copy is the work.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chclip_convert.errors import ConversionError
from chclip_convert.files.checkpoint import (
    BARE,
    MODULE_PREFIX,
    CheckpointWriter,
    SourceCheckpoint,
    checkpoint_writer,
    describe_training,
    index_checkpoint,
    load_checkpoint,
)
from chclip_convert.files.output import check_output_file, output_lock
from chclip_convert.mapping.precision import in_fp16_layout
from chclip_convert.names import DTYPE_CHOICES
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.units import human_size

if TYPE_CHECKING:
    import torch

SLIMMING = "writing the weights"  # the stage of the progress events
RESUME = "--resume {} --reset-optimizer"  # cn_clip's training reads the optimizer state unless told not to
CAST_DTYPES = tuple(choice for choice in DTYPE_CHOICES if choice != "auto")  # what --dtype can ask for
FP16_LAYOUT = "float16"  # the --dtype that means cn_clip's fp16 layout rather than every floating-point tensor
FP16_KEEPS = "vision norms, class and position embeddings, logit_scale"  # what the fp16 layout keeps in float32


@dataclass(frozen=True)
class SlimSummary:
    """What slim wrote: the file, what it left out, the dtype and the sizes before and after."""

    output: Path
    source: Path
    wrapper: str  # "training dict" or "bare state dict", as the input was
    dropped: tuple[str, ...]  # the input's top-level entries not written (the optimizer, ...)
    tensors: int
    cast: int  # tensors whose dtype changed (0: every tensor bit-identical)
    dtype: str | None
    cast_to: dict[str, int]  # how many tensors were cast to each dtype
    kept_float32: int  # with dtype float16: floating-point tensors cn_clip's fp16 layout holds in float32
    training: dict
    bytes_before: int
    bytes_after: int
    seconds: float

    def to_text(self) -> str:
        """The summary the command prints: the sizes first."""
        saved = 1 - self.bytes_after / self.bytes_before if self.bytes_before else 0.0
        weights = ", ".join(f"{count} cast to {dtype}" for dtype, count in self.cast_to.items()) or "bit-identical"
        weights += ", the others bit-identical" if 0 < self.cast < self.tensors else ""
        lines = [
            f"Slimmed {self.source} → {self.output}",
            f"  size:       {human_size(self.bytes_before)} → {human_size(self.bytes_after)} ({saved:.0%} smaller)",
            f"  left out:   {', '.join(self.dropped) or 'nothing (it held only weights)'}",
            f"  tensors:    {self.tensors}, {weights}",
        ]
        if self.dtype == FP16_LAYOUT:
            kept = f"{self.kept_float32} tensors kept in float32 ({FP16_KEEPS})"
            lines.append(f"  float16:    cn_clip's fp16 layout, {kept}")
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
            "cast_to": self.cast_to, "kept_float32": self.kept_float32, "training": self.training,
            "bytes_before": self.bytes_before, "bytes_after": self.bytes_after, "seconds": self.seconds,
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
        dtype: ``None`` keeps every tensor bit-identical. ``"float16"`` writes cn_clip's fp16 layout, as its
            ``convert_weights`` leaves a model: convolutions, linear layers, attention, all of BERT and both
            projections in float16; the vision tower's norms, its class and position embeddings and ``logit_scale``
            in float32. ``"bfloat16"`` or ``"float32"`` casts every floating-point tensor. cn_clip loads any of
            them: ``load_state_dict`` casts into the model's dtype.
        progress: gets the bytes written of all (stage :data:`SLIMMING`).

    Returns:
        A :class:`SlimSummary`. The file loads in cn_clip with ``load_state_dict(strict=True)`` and resumes training
        with ``--resume FILE --reset-optimizer`` (without the flag, cn_clip asks for the optimizer state).

    Raises:
        ConversionError: (a subclass) for an unreadable input or an unusable output; nothing is written.
    """
    started = time.perf_counter()
    if dtype is not None and dtype not in CAST_DTYPES:
        raise ConversionError(f"dtype {dtype!r} is not one of {', '.join(CAST_DTYPES)}.")
    with output_lock(output):  # one writer, from this check to the rename
        target = check_output_file(output, input_files=[checkpoint], overwrite=overwrite)
        indexed = index_checkpoint(checkpoint) if dtype is None else None
        if indexed is not None:
            source, cast_to, kept_float32 = indexed, {}, 0
            _copy_records(indexed, target, overwrite, progress)
        else:
            source, cast_to, kept_float32 = _write_with_torch(checkpoint, dtype, target, overwrite, progress)
    return SlimSummary(
        output=target, source=source.path, wrapper=source.wrapper, dropped=tuple(source.skipped),
        tensors=len(source.state_dict), cast=sum(cast_to.values()), dtype=dtype, cast_to=cast_to,
        kept_float32=kept_float32, training=dict(source.metadata), bytes_before=source.path.stat().st_size,
        bytes_after=target.stat().st_size, seconds=time.perf_counter() - started,
    )  # fmt: skip


def _copy_records(source: SourceCheckpoint, target: Path, overwrite: bool, progress: OnProgress | None) -> None:
    """Write ``source``, an index whose every tensor fills a record of its own, as copies of those records."""
    total, done = sum(record.size for record in source.records.values()), 0
    with _writer_like(source, target, overwrite) as writer:
        for key, ref in source.state_dict.items():
            writer.copy(key, ref.shape, ref.storage, source.path, source.records[key])
            done += source.records[key].size
            if progress is not None:
                progress(Progress(done, total, "B", SLIMMING))


def _write_with_torch(
    checkpoint: str | Path, dtype: str | None, target: Path, overwrite: bool, progress: OnProgress | None
) -> tuple[SourceCheckpoint, dict[str, int], int]:
    """Read ``checkpoint`` with torch and write it to ``target``, cast to ``dtype``; the source, how many tensors
    were cast to each dtype, and how many cn_clip's fp16 layout keeps in float32 (0 unless asked for)."""
    import torch

    source = load_checkpoint(checkpoint)
    dtypes = {key: written_dtype(key, tensor, dtype) for key, tensor in source.state_dict.items()}
    cast_to = _write(source, dtypes, target, overwrite, progress)
    return source, cast_to, list(dtypes.values()).count(torch.float32) if dtype == FP16_LAYOUT else 0


@contextlib.contextmanager
def _writer_like(source: SourceCheckpoint, target: Path, overwrite: bool) -> Iterator[CheckpointWriter]:
    """A :func:`checkpoint_writer` for ``target`` that puts back ``source``'s wrapper, metadata and prefix."""
    with checkpoint_writer(target, overwrite=overwrite) as writer:
        writer.bare, writer.metadata = source.wrapper == BARE, dict(source.metadata)
        writer.prefix = MODULE_PREFIX if source.had_module_prefix else ""
        yield writer


def _write(
    source: SourceCheckpoint, dtypes: dict[str, torch.dtype], target: Path, overwrite: bool, progress
) -> dict[str, int]:
    """Write ``source`` to ``target``, each tensor in its dtype of ``dtypes``; how many were cast to each dtype."""
    from chclip_convert.conversion.state_dict import dtype_name

    total = sum(math.prod(source.state_dict[key].shape) * dtype.itemsize for key, dtype in dtypes.items())
    done, cast_to = 0, Counter()
    with _writer_like(source, target, overwrite) as writer:
        for key, tensor in source.state_dict.items():
            writer.add(key, tensor, dtypes[key], source=source)
            cast_to[dtype_name(dtypes[key])] += dtypes[key] != tensor.dtype
            done += math.prod(tensor.shape) * dtypes[key].itemsize
            if progress is not None:
                progress(Progress(done, total, "B", SLIMMING))
    return {name: count for name, count in sorted(cast_to.items()) if count}


def written_dtype(name: str, tensor: torch.Tensor, dtype: str | None) -> torch.dtype:
    """The dtype slim writes the tensor ``name`` (without ``module.``) in, given the ``dtype`` asked for (see
    :func:`slim_checkpoint`); a tensor that is not floating-point keeps its own."""
    import torch

    from chclip_convert.conversion.state_dict import DTYPES

    if dtype is None or not tensor.is_floating_point():
        return tensor.dtype
    if dtype == FP16_LAYOUT:
        return torch.float16 if in_fp16_layout(name) else torch.float32
    return DTYPES[dtype]

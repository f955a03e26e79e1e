"""Average chosen checkpoints into one (docs/training-runs.md, "average"): each tensor's weighted mean over the
inputs, summed in float64 and cast back to its dtype, as timm's ``avg_checkpoints.py`` does.

Streaming: the inputs are memory-mapped and walked tensor by tensor, a slice of a tensor at a time, and each slice
of the mean goes straight into the output file as it is summed
(:func:`~chclip_convert.files.checkpoint.checkpoint_writer`), so the process's own memory does not grow with the
number of inputs or their size, and every byte is written once. The optimizer state is mapped but
never read. The output is cn_clip's training dict without optimizer, in the standard layout, recording its inputs
and weights under ``average``; it converts, diffs and drifts like any checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.changes.drift import natural_key
from chclip_convert.conversion.state_dict import Step, dtype_name, standard_layout_steps
from chclip_convert.errors import ConversionError, UnsupportedCheckpointError
from chclip_convert.files.checkpoint import (
    AVERAGE_KEY,
    SLICE,
    TRAINING_KEYS,
    SourceCheckpoint,
    checkpoint_writer,
    describe_training,
    load_checkpoint,
)
from chclip_convert.files.output import check_output_file, output_lock
from chclip_convert.files.records import shareable_path
from chclip_convert.mapping.architecture import infer_architecture
from chclip_convert.mapping.table import is_flash_layout
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.units import human_size

AVERAGING = "averaging"  # the stage of the progress events
# Elements summed at a time, whatever the tensor's size: the writer's slice (on the calling thread), 128 KiB of
# float64, so that the sum and an input's slice stay in the CPU's cache. Five ViT-B-16 inputs took 1.6-2.0 s of summing
# on one thread; 3.4 s with 2 Mi elements (16 MiB) a slice, which left the cache for memory at every step.
CHUNK = SLICE


@dataclass(frozen=True)
class AverageSummary:
    """What an average wrote: the file, its inputs with their (normalised) weights, and its training metadata."""

    output: Path
    inputs: tuple[Path, ...]
    weights: tuple[float, ...]  # normalised: they sum to 1
    tensors: int
    parameter_count: int
    training: dict  # the epoch, step and run name written
    training_from: Path | None  # the input they come from (the last in training order); None: defaults
    flash_inputs: tuple[Path, ...]  # inputs read in the flash-attention layout, mapped to the standard one
    output_bytes: int
    seconds: float

    def to_text(self) -> str:
        """The summary the command prints."""
        lines = [f"Averaged {len(self.inputs)} checkpoint(s) → {self.output}"]
        lines += [f"  {weight:.4f} × {path}" for path, weight in zip(self.inputs, self.weights, strict=True)]
        origin = f"of {self.training_from.name}, the last in training order" if self.training_from else "defaults"
        lines += [
            f"  training:   {describe_training(self.training)} ({origin})",
            f"  tensors:    {self.tensors} ({self.parameter_count:,} parameters), summed in float64",
            f"  written:    {human_size(self.output_bytes)}, cn_clip's training dict without optimizer state",
            *(f"  note: {path.name}: flash-attention layout, read as the standard one" for path in self.flash_inputs),
            f"  time:       {self.seconds:.1f} s",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "output": str(self.output),
            "inputs": [{"path": str(p), "weight": w} for p, w in zip(self.inputs, self.weights, strict=True)],
            "tensors": self.tensors,
            "parameter_count": self.parameter_count,
            "training": self.training,
            "training_from": str(self.training_from) if self.training_from else None,
            "flash_inputs": [str(p) for p in self.flash_inputs],
            "output_bytes": self.output_bytes,
            "seconds": self.seconds,
        }


def checked_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """``weights`` as floats (1 each without any); raise unless there is one finite, non-negative weight per input
    and they do not sum to 0. Weights are proportions, normalised by their sum: ``1 1 2`` means 0.25, 0.25, 0.5."""
    if weights is None:
        return [1.0] * count
    if len(weights) != count:
        raise ConversionError(f"{len(weights)} weight(s) given for {count} checkpoint(s); give one per checkpoint.")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ConversionError(f"weights must be finite, non-negative and not all 0; got {list(weights)}.")
    return [float(w) for w in weights]


class StandardView:
    """One input's tensors under the standard layout's names (see
    :func:`~chclip_convert.conversion.state_dict.standard_layout_steps`), each read only when asked for."""

    def __init__(self, source: SourceCheckpoint) -> None:
        self.source = source
        self.flash = is_flash_layout(source.state_dict)
        self._where: dict[str, tuple[Step, int]] = {
            name: (step, position)
            for step in standard_layout_steps(source.state_dict)
            for position, name in enumerate(step.outputs)
        }

    def names(self) -> set[str]:
        return set(self._where)

    def spec(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """The shape and dtype of ``name``, from metadata alone."""
        step, position = self._where[name]
        tensor = self.source.state_dict[step.inputs[0]]
        return tuple(step.op.shapes([tuple(tensor.shape)])[position]), tensor.dtype

    def read(self, name: str) -> torch.Tensor:
        step, position = self._where[name]
        return step.op.apply([self.source.read(step.inputs[0])])[position]


def average_checkpoints(
    checkpoints: Sequence[str | Path],
    output: str | Path,
    *,
    weights: Sequence[float] | None = None,
    overwrite: bool = False,
    progress: OnProgress | None = None,
) -> AverageSummary:
    """Write the (weighted) mean of ``checkpoints`` to ``output`` as cn_clip's training dict, without optimizer.

    Args:
        checkpoints: original ``.pt`` files of one architecture (never modified); any mix of the standard and the
            flash-attention layouts, and of training dicts and bare state dicts.
        output: the ``.pt`` file to write; refused if it exists, unless ``overwrite``, or if it is an input.
        weights: one per checkpoint, as proportions (see :func:`checked_weights`): the mean is
            Σ wᵢ·xᵢ / Σ wᵢ; equal weights without.
        progress: gets the bytes written of all (stage :data:`AVERAGING`); an exception it raises stops the
            average, and nothing is left behind.

    Returns:
        An :class:`AverageSummary`. The file's epoch, step and run name are those of the last input in training
        order (epoch 0, step 0 when none has them); ``average`` in it records the inputs (paths relative to the
        output's folder) and their weights.

    Raises:
        ConversionError: (a subclass) naming the file — and the tensor, for a mismatch — if an input is not a
            checkpoint, or the inputs differ in architecture, names, shapes or dtypes; nothing is written.
    """
    started = time.perf_counter()
    paths = [Path(p).expanduser() for p in checkpoints]
    if not paths:
        raise ConversionError("give at least one checkpoint to average.")
    raw = checked_weights(weights, len(paths))
    shares = [weight / math.fsum(raw) for weight in raw]
    with output_lock(output):  # one writer, from this check to the rename
        target = check_output_file(output, input_files=paths, overwrite=overwrite)
        views = [StandardView(load_checkpoint(path)) for path in paths]
        names = check_alike(views)
        last = _last_in_training(views)
        total = sum(math.prod(views[0].spec(n)[0]) * views[0].spec(n)[1].itemsize for n in names)
        done = 0
        buffer = torch.empty(2, CHUNK, dtype=torch.float64)  # a slice's sum and one input's slice, reused throughout
        with checkpoint_writer(target, overwrite=overwrite) as writer:
            writer.metadata = _metadata(views, shares, last, target)
            for name in names:
                shape, dtype = views[0].spec(name)
                tensors = [view.read(name) for view in views]
                writer.add_slices(name, shape, dtype, _mean_slices(dtype, tensors, raw, buffer, name, views))
                done += math.prod(shape) * dtype.itemsize
                if progress is not None:
                    progress(Progress(done, total, "B", AVERAGING))
            training = {key: writer.metadata[key] for key in TRAINING_KEYS}
    return AverageSummary(
        output=target, inputs=tuple(paths), weights=tuple(shares), tensors=len(names),
        parameter_count=sum(math.prod(views[0].spec(n)[0]) for n in names), training=training,
        training_from=last.source.path if last is not None else None,
        flash_inputs=tuple(view.source.path for view in views if view.flash),
        output_bytes=target.stat().st_size, seconds=time.perf_counter() - started,
    )  # fmt: skip


def check_alike(views: Sequence[StandardView]) -> list[str]:
    """The tensor names every input holds, sorted; raise naming the input (and tensor) that differs from the first
    in architecture, names, shapes or dtypes."""
    first = views[0]
    architectures = [_architecture(view) for view in views]
    for view, architecture in zip(views[1:], architectures[1:], strict=True):
        if architecture != architectures[0]:
            raise UnsupportedCheckpointError(
                f"is a {architecture.description}, but {first.source.path} is a {architectures[0].description}; "
                "only checkpoints of one architecture average. Nothing was written.",
                path=view.source.path,
            )
    names = first.names()
    for view in views[1:]:
        _check_names(view, first, names)
    return sorted(names)


def _architecture(view: StandardView):
    return infer_architecture(view.source.state_dict, path=view.source.path)


def _check_names(view: StandardView, first: StandardView, names: set[str]) -> None:
    missing, extra = sorted(names - view.names()), sorted(view.names() - names)
    for keys, what in ((missing, "lacks"), (extra, "holds, and the first input lacks,")):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise UnsupportedCheckpointError(
                f"{what} the tensor {keys[0]}{more}, unlike {first.source.path}; the inputs must hold the same "
                "tensors. Nothing was written.",
                path=view.source.path,
            )
    for name in sorted(names):
        (shape, dtype), (first_shape, first_dtype) = view.spec(name), first.spec(name)
        if shape != first_shape or dtype != first_dtype:
            raise UnsupportedCheckpointError(
                f"holds {name} as {list(shape)} {dtype_name(dtype)}, but {first.source.path} as {list(first_shape)} "
                f"{dtype_name(first_dtype)}; the inputs must agree in shapes and dtypes (slim --dtype casts one). "
                "Nothing was written.",
                path=view.source.path,
            )


def _mean_slices(
    dtype: torch.dtype, tensors: list[torch.Tensor], weights: list[float], buffer: torch.Tensor, name: str, views
) -> Iterator[torch.Tensor]:
    """Σ wᵢ·xᵢ / Σ wᵢ over ``tensors``, flat, a slice of :data:`CHUNK` elements at a time, summed in float64 in the
    inputs' order (the writer casts each slice back to ``dtype``). A non-float tensor (a count, a mask) is not
    averaged: every input must hold the same values, and the first input's are given. ``buffer`` holds two float64
    slices: the sum, and an input's slice cast; each slice given is that sum, so it must be used before the next.

    Nothing is allocated here: ``add_`` of a float32 tensor into a float64 one would make a float64 copy of it
    first (torch casts a CPU operand that way), and those short-lived copies made the process's memory grow to
    3.5 GiB over five ViT-B-16 inputs (measured with 16 MiB slices; malloc did not give them back)."""
    flats = [tensor.reshape(-1) for tensor in tensors]
    if not dtype.is_floating_point:
        for view, flat in zip(views[1:], flats[1:], strict=True):
            if not torch.equal(flat, flats[0]):
                raise UnsupportedCheckpointError(
                    f"holds other values of {name} ({dtype_name(dtype)}, which is not averaged) than "
                    f"{views[0].source.path}. Nothing was written.",
                    path=view.source.path,
                )
        yield flats[0]
        return
    size, divisor = flats[0].numel(), math.fsum(weights)
    for start in range(0, size, CHUNK):
        stop = min(start + CHUNK, size)
        total, cast = buffer[0, : stop - start].zero_(), buffer[1, : stop - start]
        for flat, weight in zip(flats, weights, strict=True):
            total.add_(cast.copy_(flat[start:stop]), alpha=weight)
        yield total.div_(divisor)


def _last_in_training(views: Sequence[StandardView]) -> StandardView | None:
    """The input latest in training order (epoch, then step, then name), among those that record an epoch."""
    dated = [view for view in views if isinstance(view.source.metadata.get("epoch"), int)]
    if not dated:
        return None
    return max(dated, key=lambda view: (
        view.source.metadata["epoch"], _number(view.source.metadata.get("step")), natural_key(view.source.path.name),
    ))  # fmt: skip


def _number(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _metadata(views: Sequence[StandardView], shares: list[float], last: StandardView | None, output: Path) -> dict:
    """The training dict's entries beside ``state_dict``: epoch, step and name of ``last``, and what was averaged."""
    training = {"epoch": 0, "step": 0, "name": f"average of {len(views)} checkpoints"}
    if last is not None:
        training.update({key: last.source.metadata[key] for key in TRAINING_KEYS if key in last.source.metadata})
    names = [shareable_path(view.source.path, output.parent) for view in views]
    record = {
        "inputs": names,
        "weights": shares,
        "epoch_and_step_of": shareable_path(last.source.path, output.parent) if last is not None else None,
    }
    return {**training, AVERAGE_KEY: record}

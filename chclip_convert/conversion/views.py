"""Any checkpoint seen under transformers' names, one tensor at a time: an original ``.pt`` (either layout, any
dtype, mapped through the table — a fused q/k/v weight split) or a converted folder (ours or another's).

What the conversion leaves out is set apart, not compared: BERT's pooler on the original side (cn_clip does
not use it) and the position-id buffers older transformers versions saved on the folder side. A source key
the table has no rule for, or whose op cannot apply to its shape, keeps its original name, so two original
checkpoints still compare it and a converted folder shows it as missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from chclip_convert.conversion.state_dict import Step, apply_steps, table_steps
from chclip_convert.files.checkpoint import SourceCheckpoint, load_checkpoint
from chclip_convert.files.folder import FolderTensors
from chclip_convert.files.safetensors_writer import TensorSpec
from chclip_convert.mapping.table import IGNORED, REVERSE_IGNORED

CHECKPOINT, FOLDER = "original checkpoint", "converted folder"


class TensorSource(Protocol):
    """What a comparison needs of either side."""

    path: Path
    kind: str
    metadata: dict  # a training checkpoint's epoch, step and run name; empty for a folder
    not_compared: dict[str, str]  # name → why it is left out

    def names(self) -> list[str]: ...
    def spec(self, name: str) -> TensorSpec: ...
    def read(self, name: str) -> torch.Tensor: ...
    def close(self) -> None: ...


class MappedCheckpoint:
    """An original checkpoint under transformers' names. Opening reads no tensor data (it is memory-mapped,
    and the optimizer's state is never touched); :meth:`read` derives one target tensor from its source, and
    :meth:`mapped` every target of the table, each source tensor read once."""

    kind = CHECKPOINT

    def __init__(self, path: str | Path) -> None:
        self.source: SourceCheckpoint = load_checkpoint(path)
        self.path = self.source.path
        state = self.source.state_dict
        self.not_compared = {key: IGNORED[key] for key in state if key in IGNORED}
        self.steps: list[Step] = table_steps(key for key in state if key not in IGNORED)
        self._steps = {target: step for step in self.steps for target in step.outputs}
        self._targets: dict[str, tuple[Step, int]] = {}
        self._specs: dict[str, TensorSpec] = {}
        for step in self.steps:
            tensor = state[step.inputs[0]]
            try:  # the op on a meta tensor: its shapes, or a ValueError where it cannot apply
                pieces = step.op.apply([torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")])
            except ValueError:
                continue  # kept under its own name below
            for position, (target, piece) in enumerate(zip(step.outputs, pieces, strict=True)):
                self._targets[target] = (step, position)
                self._specs[target] = TensorSpec(target, piece.shape, tensor.dtype)
        mapped = {step.inputs[0] for step, _ in self._targets.values()}
        for key, tensor in state.items():
            if key not in mapped and key not in IGNORED:
                self._specs[key] = TensorSpec(key, tensor.shape, tensor.dtype)

    @property
    def metadata(self) -> dict:
        return self.source.metadata

    def names(self) -> list[str]:
        return sorted(self._specs)

    def spec(self, name: str) -> TensorSpec:
        return self._specs[name]

    def read(self, name: str) -> torch.Tensor:
        if name not in self._targets:
            return self.source.read(name)
        step, position = self._targets[name]
        return step.op.apply([self.source.read(key) for key in step.inputs])[position]

    def implied(self, target: str) -> torch.Tensor | None:
        """The values the table puts at ``target``, read from its source; ``None`` where no step makes it or
        the step's op cannot apply."""
        return self.read(target) if target in self._targets else None

    def step(self, target: str) -> Step | None:
        """The table's step that makes ``target``, also where its op cannot apply; ``None`` if none does."""
        return self._steps.get(target)

    def mapped(self) -> Iterator[tuple[str, Step, torch.Tensor | None]]:
        """``(target, step, the values the table puts there)`` for every target of :attr:`steps` — a q/k/v
        slice, a transposed matrix, ... — each source tensor read once (a fused q/k/v weight once, then split).
        The values are ``None`` where the op cannot apply (a fused tensor of the wrong size), and that source
        tensor is not read."""
        for step in self.steps:
            if step.outputs[0] not in self._targets:
                yield from ((target, step, None) for target in step.outputs)
                continue
            for target, tensor, _ in apply_steps([step], self.source.read):
                yield target, step, tensor

    def close(self) -> None:
        self._targets, self._specs, self._steps = {}, {}, {}

    def __enter__(self) -> MappedCheckpoint:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class ConvertedFolder(FolderTensors):
    """A transformers folder's tensors, read one at a time, its rebuilt buffers set apart."""

    kind = FOLDER

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.path = self.folder
        self.not_compared = {key: REVERSE_IGNORED[key] for key in super().names() if key in REVERSE_IGNORED}
        self.metadata: dict = {}  # a folder records no epoch or step

    def names(self) -> list[str]:
        return [key for key in super().names() if key not in self.not_compared]


def open_tensors(path: str | Path) -> MappedCheckpoint | ConvertedFolder:
    """A folder is read as a converted model, a file as an original checkpoint; each raises a
    :class:`chclip_convert.errors.ConversionError` naming the path if it is not one."""
    path = Path(path).expanduser()
    return ConvertedFolder(path) if path.is_dir() else MappedCheckpoint(path)

"""Reversible tensor operations used by the mapping table.

Each op turns the tensors of one side into the tensors of the other and knows its inverse
(``reverse_op``), so the table that converts original → transformers also converts back.
Ops never copy data they do not have to: ``Identity`` and ``Chunk`` return views of their input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Identity:
    """One tensor in, the same tensor out (a pure rename)."""

    name = "rename"
    transforms = False

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (tensor,) = tensors
        return [tensor]

    def shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return [tuple(shapes[0])]

    @property
    def reverse_op(self) -> Identity:
        return self


@dataclass(frozen=True)
class Transpose:
    """Swap the two dimensions of a matrix (``[in, out]`` parameters ↔ ``nn.Linear.weight``)."""

    name = "transpose"
    transforms = True

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (tensor,) = tensors
        if tensor.dim() != 2:
            raise ValueError(f"transpose needs a 2-d tensor, got shape {tuple(tensor.shape)}")
        return [tensor.t().contiguous()]

    def shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = tuple(shapes[0])
        return [shape[::-1]] if len(shape) == 2 else [shape]

    @property
    def reverse_op(self) -> Transpose:
        return self


@dataclass(frozen=True)
class Chunk:
    """Split one tensor into ``parts`` equal pieces along ``dim`` (fused q/k/v → q, k, v)."""

    parts: int
    dim: int = 0
    name = "split"
    transforms = True

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        (tensor,) = tensors
        if tensor.dim() == 0 or tensor.shape[self.dim] % self.parts:
            raise ValueError(f"cannot split shape {tuple(tensor.shape)} into {self.parts} equal parts")
        return list(tensor.chunk(self.parts, dim=self.dim))

    def shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        shape = list(shapes[0])
        if not shape or shape[self.dim] % self.parts:
            return [tuple(shapes[0])] * self.parts
        shape[self.dim] //= self.parts
        return [tuple(shape)] * self.parts

    @property
    def reverse_op(self) -> Concatenate:
        return Concatenate(parts=self.parts, dim=self.dim)


@dataclass(frozen=True)
class Concatenate:
    """Join ``parts`` tensors along ``dim`` (q, k, v → fused in_proj); the inverse of :class:`Chunk`."""

    parts: int
    dim: int = 0
    name = "concatenate"
    transforms = True

    def apply(self, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(tensors) != self.parts:
            raise ValueError(f"concatenate expects {self.parts} tensors, got {len(tensors)}")
        return [torch.cat(list(tensors), dim=self.dim)]

    def shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        first = list(shapes[0])
        first[self.dim] = sum(shape[self.dim] for shape in shapes)
        return [tuple(first)]

    @property
    def reverse_op(self) -> Chunk:
        return Chunk(parts=self.parts, dim=self.dim)


Op = Identity | Transpose | Chunk | Concatenate

IDENTITY = Identity()
TRANSPOSE = Transpose()
SPLIT_QKV = Chunk(parts=3, dim=0)

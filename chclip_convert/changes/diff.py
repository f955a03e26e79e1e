"""What differs between two checkpoints, tensor by tensor, in transformers' namespace.

Either side may be an original checkpoint (either layout, any dtype) or a converted folder
(:mod:`chclip_convert.conversion.views`). Streamed: at most one tensor of each side is held at once, compared in
float64 chunks of bounded size, and the optimizer's state is never read. ``equal`` means bit-identical after
mapping, compared in float64 (so dtype is ignored: fp16 weights and their fp32 copy are equal).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from chclip_convert.conversion.views import open_tensors
from chclip_convert.mapping.table import split_layer_index

CHUNK = 1 << 18  # elements per float64 pass (2 MiB a side, so a chunk's passes stay in the CPU's cache)
VISION, TEXT, SHARED = "vision", "text", "shared"
TOWERS = (VISION, TEXT, SHARED)
LAYER, EMBEDDINGS, PROJECTION, NORM, LOGIT_SCALE, OTHER = (
    "layer", "embeddings", "projection", "norm", "logit_scale", "other"
)  # fmt: skip
SECTION_ORDER = (EMBEDDINGS, NORM, LAYER, PROJECTION, LOGIT_SCALE, OTHER)

DiffProgress = Callable[[int, int], None]  # (tensors compared, tensors to compare)


@dataclass(frozen=True, order=True)
class Part:
    """Where a tensor sits: its tower, and a layer number or a named section outside the layers."""

    tower: str
    section: str
    layer: int = -1  # -1 outside the layers

    @property
    def label(self) -> str:
        return f"layer {self.layer}" if self.section == LAYER else self.section.replace("_", " ")

    def sort_key(self) -> tuple:
        return TOWERS.index(self.tower), SECTION_ORDER.index(self.section), self.layer


def part_of(name: str) -> Part:
    """The tower and layer (or section) of a tensor name, transformers' or original."""
    if name.startswith(("vision_model.", "visual_projection", "visual.")):
        tower = VISION
    elif name.startswith(("text_model.", "text_projection", "bert.")):
        tower = TEXT
    else:
        tower = SHARED
    layer = split_layer_index(name)[1]
    if layer is not None:
        return Part(tower, LAYER, layer)
    if "embedding" in name:
        return Part(tower, EMBEDDINGS)
    if "projection" in name or name == "visual.proj":
        return Part(tower, PROJECTION)
    if name == "logit_scale":
        return Part(tower, LOGIT_SCALE)
    if "norm" in name or ".ln_" in name:
        return Part(tower, NORM)
    return Part(tower, OTHER)


def fold_layers(parts: Iterable[Part], folds: Callable[[Part], bool]) -> Iterator[Part | list[Part]]:
    """``parts`` in order, with each run of consecutive layers of one tower for which ``folds`` holds given as
    one list (what the summaries print as ``layers 0–8``); every other part alone."""
    run: list[Part] = []
    for part in parts:
        folded = part.section == LAYER and folds(part)
        if folded and (not run or (part.tower == run[-1].tower and part.layer == run[-1].layer + 1)):
            run.append(part)
            continue
        if run:
            yield run
        run = [part] if folded else []
        if not folded:
            yield part
    if run:
        yield run


def span_label(run: list[Part]) -> str:
    """``layer 9`` for one layer, ``layers 0–8`` for a run of them."""
    return run[0].label if len(run) == 1 else f"layers {run[0].layer}–{run[-1].layer}"


@dataclass(frozen=True)
class TensorChange:
    """One tensor both sides hold with one shape: how B differs from A, over the whole tensor."""

    key: str
    equal: bool  # bit-identical in float64
    relative_change: float  # ‖B − A‖ / ‖A‖ (0 if equal; inf if A is all zero and B is not)
    max_abs: float  # max |B − A|
    cosine: float | None  # ⟨A, B⟩ / (‖A‖ ‖B‖); None if either side is all zero
    norm_a: float
    norm_b: float
    norm_diff: float  # ‖B − A‖
    count: int = 0  # elements

    def to_dict(self) -> dict:
        return {
            "key": self.key,
            "relative_change": _finite(self.relative_change),
            "max_abs": _finite(self.max_abs),
            "cosine": _finite(self.cosine),
            "norm_a": _finite(self.norm_a),
            "norm_b": _finite(self.norm_b),
        }


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside: the statistics are memory-bound, and a second thread that must wait
    for a busy core makes each small reduction slower (measured: 1.5 s against 10 s on a shared 2-core CPU).

    Torch's thread count is the whole process's: off the main thread (a widget's worker, while the kernel may be
    computing) it is left as it is, so that no other work is slowed and two overlapping calls cannot leave it at
    one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def measure_change(key: str, a: torch.Tensor, b: torch.Tensor) -> TensorChange:
    """Compare ``a`` and ``b`` (one shape, any dtypes) in float64 chunks: one pass over each."""
    with one_thread():  # the passes are short: a second thread waiting for a busy core only slows them
        return _measure_change(key, a, b)


def _measure_change(key: str, a: torch.Tensor, b: torch.Tensor) -> TensorChange:
    if a.dtype == b.dtype and torch.equal(a, b):  # the common case in a frozen tower, without float64
        norm = math.sqrt(sum(torch.dot(x, x).item() for x in _chunks64(a)))
        return TensorChange(key, True, 0.0, 0.0, 1.0 if norm else None, norm, norm, 0.0, a.numel())
    sums = [0.0, 0.0, 0.0]  # ‖B − A‖², ‖A‖², ‖B‖² (⟨A, B⟩ follows from them)
    largest, has_nan, nan_equal = 0.0, False, True
    for x, y, d in _chunk_pairs64(a, b):
        for i, u in enumerate((d, x, y)):
            sums[i] += torch.dot(u, u).item()
        if d.numel():
            low, high = (value.item() for value in torch.aminmax(d))
            if math.isnan(low) or math.isnan(high):  # a NaN on either side: equal only if both have it there
                has_nan, nan_equal = True, nan_equal and _equal_with_nan(x, y)
            else:
                largest = max(largest, -low, high)
                nan_equal = nan_equal and low == high == 0.0  # a chunk without NaN: equal only if unchanged
    diff2, a2, b2 = sums
    equal = diff2 == 0.0 or (has_nan and nan_equal and math.isnan(diff2))
    if equal:
        diff2 = 0.0
    elif has_nan:
        largest = math.nan
    relative = math.sqrt(diff2 / a2) if a2 > 0 else (0.0 if diff2 == 0 else math.inf)
    # ⟨A, B⟩ = (‖A‖² + ‖B‖² − ‖B − A‖²) / 2, exact to float64 rounding of ‖A‖² + ‖B‖² (~1e-16 of the cosine):
    # one pass fewer than a fourth dot product
    cosine = max(-1.0, min(1.0, (a2 + b2 - diff2) / (2 * math.sqrt(a2 * b2)))) if a2 > 0 and b2 > 0 else None
    return TensorChange(
        key, equal, relative, largest, cosine, math.sqrt(a2), math.sqrt(b2), math.sqrt(diff2), a.numel()
    )


def _chunks64(tensor: torch.Tensor) -> Iterable[torch.Tensor]:
    flat = tensor.detach().reshape(-1)
    return (piece.to(torch.float64) for piece in flat.split(CHUNK))


def _chunk_pairs64(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A's chunk, B's and B − A in float64, written into one buffer reused for every chunk of the tensor."""
    flat_a, flat_b = a.detach().reshape(-1), b.detach().reshape(-1)
    size = flat_a.numel()
    block = torch.empty(3, min(CHUNK, size), dtype=torch.float64)
    for start in range(0, max(size, 1), CHUNK):  # an empty tensor is one empty chunk
        x, y, d = (row[: min(CHUNK, size - start)] for row in block)
        x.copy_(flat_a[start : start + CHUNK])
        y.copy_(flat_b[start : start + CHUNK])
        yield x, y, torch.sub(y, x, out=d)


def _equal_with_nan(x: torch.Tensor, y: torch.Tensor) -> bool:
    return bool(((x == y) | (x.isnan() & y.isnan())).all())


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: they become null."""
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class PartChange:
    """A layer's (or section's) tensors together: ‖B − A‖ / ‖A‖ over all of them."""

    part: Part
    tensors: int
    differing: int
    relative_change: float
    largest: TensorChange | None  # the tensor that changed most, relatively


def group_changes(changes: Iterable[TensorChange]) -> list[PartChange]:
    """Per part, in tower → section → layer order."""
    grouped: dict[Part, list[TensorChange]] = {}
    for change in changes:
        grouped.setdefault(part_of(change.key), []).append(change)
    result = []
    for part in sorted(grouped, key=Part.sort_key):
        members = grouped[part]
        moved = [c for c in members if not c.equal]
        largest = max(moved, key=lambda c: c.relative_change, default=None)
        result.append(PartChange(part, len(members), len(moved), relative_norm(members), largest))
    return result


def relative_norm(changes: Iterable[TensorChange]) -> float:
    """√(Σ‖B − A‖²) / √(Σ‖A‖²) over ``changes``."""
    changes = list(changes)
    diff2 = sum(c.norm_diff**2 for c in changes)
    a2 = sum(c.norm_a**2 for c in changes)
    return math.sqrt(diff2 / a2) if a2 > 0 else (0.0 if diff2 == 0 else math.inf)


@dataclass
class CheckpointDiff:
    """Every tensor name of A and B in one of: only in A, only in B, shape differs, equal, differs."""

    a: Path
    b: Path
    a_kind: str
    b_kind: str
    only_in_a: list[str]
    only_in_b: list[str]
    shape_differs: dict[str, tuple[list[int], list[int]]]  # name → (A's shape, B's shape)
    changes: list[TensorChange]  # every tensor both hold with one shape, sorted by name
    not_compared: dict[str, str] = field(default_factory=dict)  # name → why it is left out

    @property
    def equal(self) -> list[str]:
        return [c.key for c in self.changes if c.equal]

    @property
    def differs(self) -> list[TensorChange]:
        return [c for c in self.changes if not c.equal]

    @property
    def identical(self) -> bool:
        """Same names, same shapes, every tensor bit-identical."""
        return not (self.only_in_a or self.only_in_b or self.shape_differs or self.differs)

    def parts(self) -> list[PartChange]:
        return group_changes(self.changes)

    def to_dict(self) -> dict:
        return {
            "a": str(self.a),
            "b": str(self.b),
            "a_kind": self.a_kind,
            "b_kind": self.b_kind,
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "shape_differs": sorted(self.shape_differs),
            "equal": self.equal,
            "differs": [c.to_dict() for c in self.differs],
            "shapes": {key: {"a": a, "b": b} for key, (a, b) in sorted(self.shape_differs.items())},
            "not_compared": self.not_compared,
        }

    def to_text(self) -> str:
        """A readable summary grouped by tower and layer (runs of unchanged layers folded into one line)."""
        from chclip_convert.changes.diff_text import diff_text

        return diff_text(self)


def diff_checkpoints(a: str | Path, b: str | Path, *, progress: DiffProgress | None = None) -> CheckpointDiff:
    """Compare checkpoint or folder ``a`` with ``b``, tensor by tensor (see the module).

    Raises:
        ConversionError: (a subclass) naming the path, if either is not a checkpoint or converted folder.

    Example:
        >>> diff_checkpoints("pretrained.pt", "epoch3.pt").to_text()  # doctest: +SKIP
    """
    with open_tensors(a) as first, open_tensors(b) as second:
        names_a, names_b = set(first.names()), set(second.names())
        shapes, same = {}, []
        for name in sorted(names_a & names_b):
            shape_a, shape_b = first.spec(name).shape, second.spec(name).shape
            if shape_a != shape_b:
                shapes[name] = (list(shape_a), list(shape_b))
            else:
                same.append(name)
        changes = []
        for done, name in enumerate(same, 1):
            changes.append(measure_change(name, first.read(name), second.read(name)))
            if progress is not None:
                progress(done, len(same))
        left_out = {**first.not_compared, **second.not_compared}
        return CheckpointDiff(
            first.path, second.path, first.kind, second.kind,
            sorted(names_a - names_b), sorted(names_b - names_a), shapes, changes, left_out,
        )  # fmt: skip

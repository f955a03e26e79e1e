"""Statistics of a tensor and of a pair of tensors, streamed in float64 chunks, and the one vocabulary for how
two sides' tensors of one name compare: the engine behind verify's weight check, ``diff``, the weight statistics
and ``drift``.

Each tensor is copied a chunk at a time into one float64 buffer, reused for all its chunks, so a statistic adds
a few MiB to memory whatever the tensor's size. float16, bfloat16 and float32 values convert to float64
exactly: the results are exact float64 sums, differing from a whole-tensor computation only in the order of
summation. Two notions of equal are kept apart: :attr:`PairStats.equal` (every value the same number in
float64, dtypes ignored, NaN where both sides hold NaN counting as equal) and :func:`same_bytes` (one dtype and
the same bits). Torch only; imports nothing of the package.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

# Elements per float64 pass. Measured on the shared 2-core benchmark machine (benchmarks/bench_diff.py, commit
# 82eb843): with 2^22-element chunks (32 MiB) allocated afresh, every chunk page-faulted in fresh memory and a
# full-size diff took 4.4× the time to read the weights; a 3 × 2^18 buffer (6 MiB) reused for every chunk stays
# in the CPU's cache and brought the comparison itself from 1.3–4 s to 0.5–0.7 s. One size serves single
# tensors (one row) and pairs (three rows: A, B, B − A).
CHUNK = 1 << 18

# How one name's tensors on two sides compare: the one vocabulary of verify's weight check (A what the folder
# must hold, B what it holds), diff (A and B), the weight statistics (A the source, B the converted folder) and
# drift (A the reference, B an epoch). The words are what tables show; JSON output keeps its own keys
# (diff's only_in_a, verify's missing, ...).
EQUAL, DIFFERS = "equal", "differs"  # both sides hold the name with one shape; its values are equal, or not
SHAPE_DIFFERS = "shape differs"
ONLY_IN_A, ONLY_IN_B = "only in A", "only in B"
STATUSES = (EQUAL, DIFFERS, SHAPE_DIFFERS, ONLY_IN_A, ONLY_IN_B)
COMPARED = (EQUAL, DIFFERS)  # the statuses of a name compared value by value


def placement(shape_a: Sequence[int] | None, shape_b: Sequence[int] | None) -> str | None:
    """:data:`ONLY_IN_A`, :data:`ONLY_IN_B` or :data:`SHAPE_DIFFERS` for a name the sides cannot compare value by
    value (a shape is ``None`` on the side that lacks the name); ``None`` when both hold it with one shape."""
    if shape_b is None:
        return ONLY_IN_A
    if shape_a is None:
        return ONLY_IN_B
    return None if tuple(shape_a) == tuple(shape_b) else SHAPE_DIFFERS


@dataclass(frozen=True)
class NamePairing:
    """Two sides' names, each sorted, by :func:`placement`: ``same_shape`` ones are compared value by value."""

    same_shape: list[str]
    shape_differs: list[str]
    only_in_a: list[str]
    only_in_b: list[str]


def pair_names(shapes_a: Mapping[str, Sequence[int]], shapes_b: Mapping[str, Sequence[int]]) -> NamePairing:
    """Sort every name of either side (name → shape) by how the two sides hold it."""
    found: dict[str | None, list[str]] = {None: [], SHAPE_DIFFERS: [], ONLY_IN_A: [], ONLY_IN_B: []}
    for name in sorted(shapes_a.keys() | shapes_b.keys()):
        found[placement(shapes_a.get(name), shapes_b.get(name))].append(name)
    return NamePairing(found[None], found[SHAPE_DIFFERS], found[ONLY_IN_A], found[ONLY_IN_B])


def status_text(status: str, a: str = "A", b: str = "B") -> str:
    """The status in words with the sides named: ``status_text(ONLY_IN_A, "source")`` is ``"only in source"``."""
    return {ONLY_IN_A: f"only in {a}", ONLY_IN_B: f"only in {b}"}.get(status, status)


def json_number(value: float | None) -> float | None:
    """``value`` as JSON can hold it: NaN and infinities (which JSON has not) become ``None`` (null)."""
    return value if value is not None and math.isfinite(value) else None


def relative_change(norm_diff: float, norm_ref: float) -> float:
    """‖B − A‖ / ‖A‖: 0 when nothing changed, infinite when A is all zero and B is not."""
    if norm_ref > 0:
        return norm_diff / norm_ref
    return 0.0 if norm_diff == 0 else math.inf


def grouped_change(norms: Iterable[tuple[float, float]]) -> float:
    """The relative change of several tensors taken as one, from each one's (‖B − A‖, ‖A‖):
    √(Σ‖B − A‖²) / √(Σ‖A‖²); NaN for no tensor."""
    norms = list(norms)
    if not norms:
        return math.nan
    return relative_change(math.sqrt(sum(d * d for d, _ in norms)), math.sqrt(sum(a * a for _, a in norms)))


@dataclass(frozen=True)
class TensorStats:
    """One tensor's mean, standard deviation (population), largest magnitude (NaN if it holds a NaN) and L2 norm."""

    count: int
    mean: float
    std: float
    absmax: float
    norm: float

    def to_dict(self) -> dict[str, float]:
        """``mean``, ``std``, ``absmax`` and ``norm`` (``count`` left out)."""
        return {"mean": self.mean, "std": self.std, "absmax": self.absmax, "norm": self.norm}


class RunningSums:
    """Count and sum of squares over float64 chunks and, unless told not to, the sum and largest magnitude."""

    def __init__(self) -> None:
        self.count, self.total, self.squares, self.absmax = 0, 0.0, 0.0, 0.0

    def add(self, values: torch.Tensor, *, extremes: bool = True, total: bool = True) -> tuple[float, float]:
        """Add one float64 chunk; with ``extremes``, its lowest and highest value are returned (else, or for an
        empty chunk, ``(0.0, 0.0)``) and the largest magnitude kept; with ``total``, its sum."""
        self.count += values.numel()
        self.squares += torch.dot(values, values).item()
        if total:
            self.total += values.sum().item()
        if not extremes or not values.numel():
            return 0.0, 0.0
        low, high = (value.item() for value in torch.aminmax(values))
        found = (self.absmax, -low, high)
        self.absmax = math.nan if any(map(math.isnan, found)) else max(found)  # NaN shows, not hides
        return low, high

    def stats(self) -> TensorStats:
        """The statistics of every chunk added (for no element: mean and std NaN, absmax and norm 0)."""
        if not self.count:
            return TensorStats(0, math.nan, math.nan, 0.0, 0.0)
        mean = self.total / self.count
        # E[x²] − mean² in float64: the cancellation costs ~1e-16·mean²/var relative, far below what is shown
        variance = max(self.squares / self.count - mean * mean, 0.0) if self.count > 1 else 0.0
        return TensorStats(self.count, mean, math.sqrt(variance), self.absmax, math.sqrt(self.squares))


def tensor_stats(tensor: torch.Tensor) -> TensorStats:
    """Mean, standard deviation, largest magnitude and norm of ``tensor`` (any dtype), in float64 chunks."""
    return _sums(tensor).stats()


def _sums(tensor: torch.Tensor, **only) -> RunningSums:
    """:class:`RunningSums` over every chunk of ``tensor``; ``only`` as :meth:`RunningSums.add` takes it."""
    sums = RunningSums()
    for (chunk,) in _chunks64(tensor):
        sums.add(chunk, **only)
    return sums


@dataclass(frozen=True)
class PairStats:
    """How tensor B differs from tensor A of the same shape, over the whole tensors, in float64."""

    count: int  # elements
    equal: bool  # every value the same number in float64 (dtypes ignored; NaN facing NaN is equal)
    same_bytes: bool  # one dtype and the same bits: stricter than ``equal``
    norm_a: float
    norm_b: float
    norm_diff: float  # ‖B − A‖ (0 if equal; NaN where a NaN faces a number)
    max_abs: float  # max |B − A| (0 if equal; NaN where a NaN faces a number)
    cosine: float | None  # ⟨A, B⟩ / (‖A‖ ‖B‖); None if either side is all zero, NaN if undefined (inf, NaN)
    a: TensorStats | None = None  # each side's statistics, when asked for
    b: TensorStats | None = None

    @property
    def relative_change(self) -> float:
        """‖B − A‖ / ‖A‖ (see :func:`relative_change`)."""
        return relative_change(self.norm_diff, self.norm_a)

    @property
    def norm_ratio(self) -> float:
        """‖B‖ / ‖A‖: 1 for the same bytes or two all-zero sides, infinite when only A is all zero."""
        if self.same_bytes:
            return 1.0
        if self.norm_a == 0.0:
            return 1.0 if self.norm_b == 0.0 else math.inf
        return self.norm_b / self.norm_a


def pair_stats(a: torch.Tensor, b: torch.Tensor, *, sides: bool = False) -> PairStats:
    """Compare ``a`` and ``b`` (one shape, any dtypes) in float64 chunks, one pass over each; with ``sides``,
    each side's :class:`TensorStats` too. Bit-identical tensors (the common case in a frozen tower) are
    compared by their bits, and only A is then read in float64. Run it inside :func:`one_thread`."""
    if not same_bytes(a, b):
        return _pair_pass(a, b, sides)
    side = tensor_stats(a) if sides else None
    norm = side.norm if side is not None else math.sqrt(_sums(a, extremes=False, total=False).squares)
    cosine = 1.0 if norm else None
    return PairStats(a.numel(), True, True, norm, norm, 0.0, 0.0, cosine, side, side)


def _pair_pass(a: torch.Tensor, b: torch.Tensor, sides: bool) -> PairStats:
    sums_a, sums_b, sums_d = RunningSums(), RunningSums(), RunningSums()
    has_nan, nan_equal = False, True
    for x, y, d in _chunks64(a, b, spare=1):
        torch.sub(y, x, out=d)
        sums_a.add(x, extremes=sides, total=sides)
        sums_b.add(y, extremes=sides, total=sides)
        low, high = sums_d.add(d, total=False)
        if math.isnan(low) or math.isnan(high):  # a NaN on either side: equal only if both have it there
            has_nan, nan_equal = True, nan_equal and _equal_with_nan(x, y)
        else:
            nan_equal = nan_equal and low == high == 0.0  # a chunk without NaN: equal only if unchanged
    diff2, a2, b2 = sums_d.squares, sums_a.squares, sums_b.squares
    equal = diff2 == 0.0 or (has_nan and nan_equal and math.isnan(diff2))
    if equal:
        diff2 = 0.0
    return PairStats(
        a.numel(), equal, False, math.sqrt(a2), math.sqrt(b2), math.sqrt(diff2), 0.0 if equal else sums_d.absmax,
        _cosine(a2, b2, diff2), sums_a.stats() if sides else None, sums_b.stats() if sides else None,
    )  # fmt: skip


def _cosine(a2: float, b2: float, diff2: float) -> float | None:
    """⟨A, B⟩ / (‖A‖ ‖B‖) from ‖A‖², ‖B‖² and ‖B − A‖²; None if either side is all zero, NaN where a NaN or an
    infinity leaves it undefined."""
    if not (a2 > 0 and b2 > 0):
        return None
    # ⟨A, B⟩ = (‖A‖² + ‖B‖² − ‖B − A‖²) / 2, exact to float64 rounding of ‖A‖² + ‖B‖² (~1e-16 of the cosine):
    # one pass fewer than a fourth dot product
    cosine = (a2 + b2 - diff2) / (2 * math.sqrt(a2 * b2))
    return cosine if math.isnan(cosine) else max(-1.0, min(1.0, cosine))


def _chunks64(*tensors: torch.Tensor, spare: int = 0) -> Iterator[list[torch.Tensor]]:
    """Each tensor's next :data:`CHUNK` elements in float64, and ``spare`` scratch rows, as rows of one buffer
    reused for every chunk. The tensors have one number of elements; an empty tensor is one empty chunk."""
    flats = [tensor.detach().reshape(-1) for tensor in tensors]
    size = flats[0].numel()
    block = torch.empty(len(flats) + spare, min(CHUNK, size), dtype=torch.float64)
    for start in range(0, max(size, 1), CHUNK):
        rows = [row[: min(CHUNK, size - start)] for row in block]
        for row, flat in zip(rows, flats, strict=False):
            row.copy_(flat[start : start + CHUNK])
        yield rows


def _equal_with_nan(x: torch.Tensor, y: torch.Tensor) -> bool:
    return bool(((x == y) | (x.isnan() & y.isnan())).all())


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and raw bytes (NaNs with the same bits count as equal)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_as_bits(a), _as_bits(b))


def count_differing(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many elements of two same-shaped tensors differ in their bits (all, for elements of other widths)."""
    if a.element_size() != b.element_size():
        return a.numel()
    return int((_as_bits(a) != _as_bits(b)).sum())


def _as_bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers of its element's width: compared as fast as its own dtype, bit for bit."""
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return tensor.detach().contiguous().view(width)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside: the statistics are memory-bound, and a second thread that must wait
    for a busy core makes each small reduction slower (measured: 1.5 s against 10 s on a shared 2-core CPU);
    a conversion's checks likewise leave the other core to the writing.

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

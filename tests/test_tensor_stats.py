"""The streaming statistics engine against direct float64 computations on small tensors with planted changes,
at chunk sizes that put chunk boundaries inside them; NaN and infinity on one side or both; the two notions of
equal (in float64, and bit for bit); the relative-change formula; and the one status vocabulary."""

from __future__ import annotations

import math
import threading

import pytest
import torch

import chclip_convert.tensor_stats as engine
from chclip_convert.tensor_stats import (
    ONLY_IN_A,
    ONLY_IN_B,
    SHAPE_DIFFERS,
    STATUSES,
    count_differing,
    grouped_change,
    one_thread,
    pair_names,
    pair_stats,
    placement,
    relative_change,
    same_bytes,
    status_text,
    tensor_stats,
)

# The engine sums float64 values chunk by chunk, the references below over the whole tensor: the sums differ
# only by float64 rounding in another order, at most n·ε ≈ 6e-15 relative for the 55 elements here
# (ε = 1.1e-16). 1e-12 leaves room and is still ten orders of magnitude finer than the planted changes.
RELATIVE = 1e-12


@pytest.fixture(params=[4, 7, engine.CHUNK], ids=["chunk 4", "chunk 7", "one chunk"])
def chunk(request, monkeypatch) -> int:
    """The chunk size: 4 and 7 cut the 55-element tensors into many chunks, the last one partial."""
    monkeypatch.setattr(engine, "CHUNK", request.param)
    return request.param


def planted() -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded float32 [5, 11] tensor and a copy with three elements changed, in different chunks."""
    a = torch.randn(5, 11, generator=torch.Generator().manual_seed(3))
    b = a.clone()
    b[0, 1] += 0.5
    b[2, 7] -= 2.0
    b[4, 10] *= 3.0  # the last element: in the last, partial chunk
    return a, b


def direct(tensor: torch.Tensor) -> dict[str, float]:
    values = tensor.to(torch.float64).reshape(-1)
    return {
        "mean": values.mean().item(),
        "std": values.std(unbiased=False).item(),
        "absmax": values.abs().max().item(),
        "norm": values.norm().item(),
    }


def test_pair_statistics_equal_a_direct_float64_computation(chunk):
    a, b = planted()
    found = pair_stats(a, b, sides=True)
    x, y = a.double().reshape(-1), b.double().reshape(-1)
    d = y - x
    assert not found.equal and not found.same_bytes and found.count == 55
    assert found.norm_a == pytest.approx(x.norm().item(), rel=RELATIVE)
    assert found.norm_b == pytest.approx(y.norm().item(), rel=RELATIVE)
    assert found.norm_diff == pytest.approx(d.norm().item(), rel=RELATIVE)
    assert found.relative_change == pytest.approx((d.norm() / x.norm()).item(), rel=RELATIVE)
    assert found.norm_ratio == pytest.approx((y.norm() / x.norm()).item(), rel=RELATIVE)
    assert found.cosine == pytest.approx((x @ y / (x.norm() * y.norm())).item(), rel=RELATIVE)
    # float32 → float64 is exact and both subtract the same float64 pairs: the same number, not merely close
    assert found.max_abs == d.abs().max().item()
    for side, tensor in ((found.a, a), (found.b, b)):
        assert side.count == 55
        for name, value in direct(tensor).items():
            assert getattr(side, name) == pytest.approx(value, rel=RELATIVE), name


def test_a_single_tensors_statistics_equal_direct_ones(chunk):
    a, _ = planted()
    found = tensor_stats(a.half())  # any dtype: float16 → float64 is exact too
    for name, value in direct(a.half()).items():
        assert getattr(found, name) == pytest.approx(value, rel=RELATIVE), name
    empty, one = tensor_stats(torch.zeros(0, 3)), tensor_stats(torch.tensor([-2.5]))
    assert empty.count == 0 and math.isnan(empty.mean) and (empty.absmax, empty.norm) == (0.0, 0.0)
    assert (one.mean, one.std, one.absmax, one.norm) == (-2.5, 0.0, 2.5, 2.5)


def test_equal_in_float64_ignores_the_dtype_and_same_bytes_does_not():
    a, _ = planted()
    same = pair_stats(a, a.clone(), sides=True)
    assert same.equal and same.same_bytes and (same.norm_diff, same.max_abs, same.relative_change) == (0.0, 0.0, 0.0)
    assert same.cosine == 1.0 and same.norm_ratio == 1.0 and same.a == same.b
    half = a.half()
    widened = pair_stats(half, half.float())  # every value the same number in another dtype
    assert widened.equal and not widened.same_bytes and widened.max_abs == 0.0
    assert not same_bytes(half, half.float()) and same_bytes(half, half.clone())
    zero = torch.zeros(3)
    signed = pair_stats(zero, -zero)  # -0.0 equals 0.0 as a number, not in its bits
    assert signed.equal and not signed.same_bytes and count_differing(zero, -zero) == 3


def test_nan_facing_nan_is_equal_and_nan_facing_a_number_differs(chunk):
    a, b = planted()
    a[1, 3] = b[1, 3] = float("nan")  # the same bits on both sides
    assert same_bytes(a, a.clone())  # bit for bit, a NaN equals a NaN of the same bits
    matched = pair_stats(a, a.double())
    assert matched.equal and (matched.norm_diff, matched.max_abs) == (0.0, 0.0)
    moved = pair_stats(a, b)  # the NaNs match; the planted changes still differ, in other chunks
    assert not moved.equal and math.isnan(moved.max_abs) and math.isnan(moved.norm_diff)
    lonely = a.clone()
    lonely[3, 0] = float("nan")
    one_sided = pair_stats(a, lonely)
    assert not one_sided.equal and math.isnan(one_sided.max_abs)
    assert count_differing(a, lonely) == 1


def test_a_nan_matched_in_one_chunk_does_not_hide_a_difference_in_the_next(monkeypatch):
    monkeypatch.setattr(engine, "CHUNK", 4)
    a = torch.arange(1.0, 9.0)
    a[0] = float("nan")
    b = a.double()
    assert pair_stats(a, b).equal
    b[6] = 100.0  # the second chunk; the first chunk's NaN is at the same place on both sides
    assert not pair_stats(a, b).equal


def test_infinities(chunk):
    a, _ = planted()
    b = a.clone()
    b[4, 9] = -math.inf  # on one side: an infinite difference
    found = pair_stats(a, b)
    assert not found.equal and found.max_abs == math.inf and found.relative_change == math.inf
    assert tensor_stats(b).absmax == math.inf and math.isnan(tensor_stats(b.masked_fill(b < -1e9, math.nan)).absmax)
    assert pair_stats(b, b.double()).equal  # inf − inf is NaN, yet the same number stands on both sides
    c = b.clone()
    c[0, 0] += 1.0
    both = pair_stats(b, c)  # inf facing inf, and a change elsewhere: no finite number measures it
    assert not both.equal and math.isnan(both.max_abs) and math.isnan(both.cosine)
    zero = pair_stats(torch.zeros(3), torch.tensor([3.0, 4.0, 0.0]))
    assert zero.relative_change == math.inf and zero.norm_ratio == math.inf and zero.cosine is None
    both_zero = pair_stats(torch.zeros(3), torch.zeros(3, dtype=torch.float64))
    assert both_zero.equal and both_zero.relative_change == 0.0 and both_zero.norm_ratio == 1.0


def test_the_relative_change_formula_alone_and_grouped():
    assert relative_change(5.0, 5.0) == 1.0 and relative_change(0.0, 0.0) == 0.0 and relative_change(1.0, 0) == math.inf
    # Two tensors as one: ‖ΔW‖ = √(3² + 4²) = 5 over ‖W‖ = √(6² + 8²) = 10.
    assert grouped_change([(3.0, 6.0), (4.0, 8.0)]) == 0.5
    assert math.isnan(grouped_change([]))  # no tensor compared: no number


def test_the_status_vocabulary():
    assert len(set(STATUSES)) == len(STATUSES) == 5  # five distinct words
    assert placement([2, 3], [2, 3]) is None and placement((2, 3), torch.Size([3, 2])) == SHAPE_DIFFERS
    assert placement([1], None) == ONLY_IN_A and placement(None, [1]) == ONLY_IN_B
    paired = pair_names({"k": [1], "q": [2], "a": [3]}, {"q": [2], "a": [4], "z": [5], "b": [6]})
    assert (paired.same_shape, paired.shape_differs, paired.only_in_a, paired.only_in_b) == (
        ["q"], ["a"], ["k"], ["b", "z"]
    )  # fmt: skip
    assert status_text(ONLY_IN_A, "source", "converted") == "only in source"
    assert status_text(ONLY_IN_B, "source", "converted") == "only in converted"
    assert status_text(SHAPE_DIFFERS) == "shape differs" and status_text(ONLY_IN_B) == "only in B"


def test_one_thread_holds_torch_to_one_thread_on_the_main_thread_only():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the test process runs on one thread (conftest): start from two, so this can fail
    try:
        with one_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    seen = []

    def worker():
        with one_thread():
            seen.append(torch.get_num_threads())

    torch.set_num_threads(2)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        assert seen == [2]  # another thread's work may be running: the count is left as it is
    finally:
        torch.set_num_threads(before)

"""The per-tensor work done beside the writing: the NaN/Inf check and the weights digest.

They read every weight once more, from memory (the page cache, for a memory-mapped checkpoint): done in
line they would double the time the writing takes. A single worker thread, owned by the conversion and
joined when it ends, runs them while the main thread writes; ``blake3`` and torch release the GIL. The two
are fused: each tensor is taken in chunks of :data:`CHUNK_BYTES`, and each chunk is hashed and checked for
NaN/Inf while it is still in the CPU cache, so the bytes come from memory once.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from chclip_convert.conversion.provenance import WeightsDigest, new_hash
from chclip_convert.conversion.state_dict import is_finite
from chclip_convert.files.safetensors_writer import raw_bytes

CHUNK_BYTES = 16 << 20  # per chunk: hashed, then checked while still in the last-level cache
HASH_THREADS = False  # see benchmarks/bench_digest.py


def digest_and_check(tensor: torch.Tensor, algorithm: str) -> tuple[str, bool]:
    """The hex leaf digest of ``tensor``'s bytes and whether it is finite (:func:`is_finite`), in one pass."""
    flat = tensor.detach().contiguous().reshape(-1)
    step = max(1, CHUNK_BYTES // max(1, flat.element_size()))
    leaf, finite = new_hash(algorithm, threads=HASH_THREADS), True
    for start in range(0, flat.numel(), step):
        chunk = flat[start : start + step]
        leaf.update(raw_bytes(chunk))
        finite = finite and is_finite(chunk)
    return leaf.hexdigest(), finite


class TensorChecks:
    """Checks and digests the tensors given to :meth:`submit` in a worker thread; use as a context manager.

    Leaving the block stops the worker: tensors not yet checked are dropped on an error, waited for
    otherwise.
    """

    def __init__(self, names: Iterable[str]) -> None:
        self.digest = WeightsDigest(names)
        self._pending: list[tuple[str, Future[bool]]] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chclip-checks")

    def __enter__(self) -> TensorChecks:
        return self

    def __exit__(self, kind, error, trace) -> None:
        self._pool.shutdown(wait=True, cancel_futures=error is not None)

    def submit(self, key: str, tensor: torch.Tensor) -> None:
        self._pending.append((key, self._pool.submit(self._check, key, tensor)))

    def not_submitted(self) -> list[str]:
        """Keys the digest covers that were not given to :meth:`submit` yet."""
        submitted = {key for key, _ in self._pending}
        return [key for key in self.digest.keys if key not in submitted]

    def _check(self, key: str, tensor: torch.Tensor) -> bool:
        leaf, finite = digest_and_check(tensor, self.digest.algorithm)
        self.digest.add_leaf(key, tensor, leaf)
        return finite

    def results(self) -> tuple[str, list[str]]:
        """Wait for every check; return the weights digest and the keys holding NaN or Inf."""
        non_finite = sorted(key for key, future in self._pending if not future.result())
        return self.digest.hexdigest(), non_finite

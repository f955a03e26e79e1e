"""The per-tensor work done beside the writing: the NaN/Inf check and the weights digest.

Both read every weight once more, from memory (the page cache, for a memory-mapped checkpoint): done in
line they would double the time the writing takes. A single worker thread, owned by the conversion and
joined when it ends, runs them while the main thread writes; ``hashlib`` and torch release the GIL.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from chclip_convert.conversion.provenance import WeightsDigest
from chclip_convert.conversion.state_dict import is_finite


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
        self.digest.add(key, tensor)
        return is_finite(tensor)

    def results(self) -> tuple[str, list[str]]:
        """Wait for every check; return the weights digest and the keys holding NaN or Inf."""
        non_finite = sorted(key for key, future in self._pending if not future.result())
        return self.digest.hexdigest(), non_finite

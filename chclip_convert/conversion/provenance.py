"""Where a converted folder came from: a digest of the source weights, and the file's SHA-256 on request.

The weights digest covers exactly what a conversion reads — every tensor the mapping table maps — so it is
taken as the tensors stream through and costs no extra read. The optimizer state, ``bert.pooler.*`` and
the training counters are not covered: a file re-saved with other optimizer state or without the
``module.`` prefix keeps its digest, and a single changed weight byte changes it.

Definition (:data:`ALGORITHM`, v2):

1. each covered tensor: ``leaf = BLAKE3(its bytes)`` (32 bytes) — C-contiguous, in the dtype stored in the file;
2. the digest: ``BLAKE3`` (32 bytes) of the lines ``f"{name} {dtype} {list(shape)} {leaf.hex()}\\n"``, one
   per covered tensor, sorted by name (``module.`` prefix removed; dtype as ``float16``, shape as ``[3, 4]``).

BLAKE3, because it runs at several GB/s on every x86 CPU and uses a second core for large tensors, where
BLAKE2b (about 0.9 GB/s) and SHA-256 (about 1.7 GB/s with SHA instructions, 0.2–0.45 GB/s without) would bound
the conversion. ``benchmarks/bench_digest.py`` measures the four.

The v1 definition (:data:`ALGORITHM_V1`), which older folders record, is the same with BLAKE2b-256 in both
places. A folder is checked with the algorithm it records (:func:`recorded_algorithm`).

Check a folder's ``source_weights_digest`` against a checkpoint::

    python -m chclip_convert.provenance CHECKPOINT.pt [--sha256]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import blake3
import torch

from chclip_convert.conversion.state_dict import dtype_name
from chclip_convert.errors import CheckpointReadError, ConversionError
from chclip_convert.files.safetensors_writer import raw_bytes
from chclip_convert.mapping.table import IGNORED, find_rule

ALGORITHM = "blake3 over sorted 'name dtype shape blake3(bytes)' lines (chclip-convert v2)"
ALGORITHM_V1 = "blake2b-256 over sorted 'name dtype shape blake2b-256(bytes)' lines (chclip-convert v1)"
KNOWN_ALGORITHMS = (ALGORITHM, ALGORITHM_V1)  # what a folder may record and this version recomputes
CHECK_COMMAND = "python -m chclip_convert.provenance"  # the stable name model cards give (chclip_convert/provenance.py)
DIGEST_BYTES = 32
CHUNK_BYTES = 16 << 20


def new_hash(algorithm: str = ALGORITHM, threads: bool = False):
    """A fresh hash object (``update``/``hexdigest``) of ``algorithm``; ``threads`` lets BLAKE3 use every core."""
    if algorithm == ALGORITHM:
        return blake3.blake3(max_threads=blake3.blake3.AUTO if threads else 1)
    if algorithm == ALGORITHM_V1:
        return hashlib.blake2b(digest_size=DIGEST_BYTES)
    known = ", ".join(map(repr, KNOWN_ALGORITHMS))
    raise ValueError(f"unknown weights digest algorithm {algorithm!r} (known: {known})")


def recorded_algorithm(report: dict) -> str:
    """The digest algorithm a ``conversion_report.json`` records; v1 for a report from before it was recorded."""
    return report.get("source_weights_digest_algorithm") or ALGORITHM_V1


def covered_keys(names: Iterable[str]) -> list[str]:
    """The state-dict names (``module.`` prefix removed) the digest covers: those the table maps, sorted."""
    return sorted(name for name in names if name not in IGNORED and find_rule(name) is not None)


class WeightsDigest:
    """Collects one leaf digest per covered tensor, in any order; :meth:`hexdigest` combines them."""

    def __init__(self, names: Iterable[str], algorithm: str = ALGORITHM) -> None:
        new_hash(algorithm)  # an unknown algorithm is refused here, before any tensor is read
        self.keys = covered_keys(names)
        self.algorithm = algorithm
        self._lines: dict[str, str] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Digest ``tensor`` whole (the conversion uses :meth:`add_leaf`, fused with its NaN/Inf check)."""
        leaf = new_hash(self.algorithm, threads=True)
        leaf.update(raw_bytes(tensor))
        self.add_leaf(name, tensor, leaf.hexdigest())

    def add_leaf(self, name: str, tensor: torch.Tensor, leaf: str) -> None:
        """Record the hex leaf digest of ``tensor``'s bytes, computed by the caller with :func:`new_hash`."""
        self._lines[name] = f"{name} {dtype_name(tensor.dtype)} {list(tensor.shape)} {leaf}\n"

    def missing(self) -> list[str]:
        return [key for key in self.keys if key not in self._lines]

    def hexdigest(self) -> str:
        """The digest; every covered tensor must have been added."""
        if self.missing():
            raise ValueError(f"not digested yet: {', '.join(self.missing()[:5])}")
        combined = new_hash(self.algorithm)
        for key in self.keys:
            combined.update(self._lines[key].encode())
        return combined.hexdigest()


def source_weights_digest(checkpoint: str | Path, algorithm: str = ALGORITHM) -> str:
    """Recompute, from the checkpoint alone, the ``source_weights_digest`` a conversion of it records.

    Reads only the covered tensors (one at a time, memory-mapped), never the optimizer state.

    Example:
        >>> source_weights_digest("epoch_latest.pt")  # doctest: +SKIP
        '3f1c…'
    """
    from chclip_convert.files.checkpoint import load_checkpoint

    return weights_digest(load_checkpoint(checkpoint).state_dict, algorithm)


def weights_digest(state_dict: dict[str, torch.Tensor], algorithm: str = ALGORITHM) -> str:
    """The digest of an original state dict's covered tensors (``module.`` prefix removed)."""
    digest = WeightsDigest(state_dict, algorithm)
    for key in digest.keys:
        digest.add(key, state_dict[key])
    return digest.hexdigest()


def file_sha256(path: str | Path, stop: threading.Event | None = None) -> str | None:
    """The hex SHA-256 of the whole file (optimizer state included); ``None`` if ``stop`` was set first."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            if stop is not None and stop.is_set():
                return None
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def file_sha256_beside(path: Path) -> Iterator[Callable[[], str]]:
    """Hash ``path`` in a thread while the block runs; yields a function that waits for the hex digest.

    The thread belongs to the block: leaving it (normally or by an error) stops and joins it, so no
    thread is left reading the file.
    """
    stop, result = threading.Event(), {}

    def run() -> None:
        try:
            result["sha256"] = file_sha256(path, stop)
        except OSError as error:
            result["error"] = error

    thread = threading.Thread(target=run, name="chclip-file-sha256", daemon=True)
    thread.start()

    def wait() -> str:
        thread.join()
        if "error" in result:
            raise CheckpointReadError(f"cannot be read for its SHA-256: {result['error']}", path=path)
        return result["sha256"]

    try:
        yield wait
    finally:
        stop.set()
        thread.join()


def card_section(source_name: str, sha256_recorded: bool) -> str:
    """How the card's identifiers were computed and the commands that recompute them from the checkpoint."""
    sha256 = (
        f"The source file SHA-256 covers every byte of the file (optimizer state included): `sha256sum {source_name}`."
        if sha256_recorded
        else "The whole file's SHA-256 was not computed; `chclip-convert --sha256` records it too."
    )
    return f"""## Provenance

The source weights digest identifies the weights this folder was converted from: BLAKE3 over every
tensor the conversion read — name, dtype, shape and bytes — and nothing else of the file (no optimizer
state, no training counters; see `chclip_convert.provenance`). It is also `source_weights_digest` in
`conversion_report.json`. Recompute it from the checkpoint:

```bash
{CHECK_COMMAND} {source_name}
```

```python
from chclip_convert import source_weights_digest

print(source_weights_digest("{source_name}"))
```

{sha256}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=CHECK_COMMAND, description="Print a checkpoint's source weights digest (and, asked, its SHA-256)."
    )
    parser.add_argument("checkpoint")
    parser.add_argument("--sha256", action="store_true", help="also hash the whole file (slow on large files)")
    parser.add_argument(
        "--folder", help="check against the digest a converted folder records, with the algorithm it records (v1 or v2)"
    )
    args = parser.parse_args(argv)
    try:
        matches = _print_digest(args.checkpoint, args.folder)
        if args.sha256:
            print(f"source_sha256 {file_sha256(args.checkpoint)}")
    except (ConversionError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0 if matches else 1


def _print_digest(checkpoint: str, folder: str | None) -> bool:
    """Print the checkpoint's digest (in the algorithm ``folder`` records, if given); whether it is the recorded one."""
    from chclip_convert.files.records import read_report
    from chclip_convert.names import REPORT_FILE

    if folder is None:
        print(f"source_weights_digest {source_weights_digest(checkpoint)}")
        return True
    report = read_report(Path(folder))
    if not report or "source_weights_digest" not in report:
        raise ValueError(f"{Path(folder) / REPORT_FILE}: records no source_weights_digest")
    algorithm = recorded_algorithm(report)
    actual, recorded = source_weights_digest(checkpoint, algorithm), report["source_weights_digest"]
    print(f"source_weights_digest {actual}")
    print(f"{'matches' if actual == recorded else 'differs from'} {folder}'s {recorded} ({algorithm})")
    return actual == recorded


if __name__ == "__main__":
    sys.exit(main())

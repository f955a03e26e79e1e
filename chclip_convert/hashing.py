"""SHA-256 of the source checkpoint, computed in a background thread.

The hash needs a full read of the file (optimizer state included), which is most of a conversion's I/O.
The command line starts it before importing torch and transformers, so it runs beside the imports and the
writing instead of after them; ``hashlib`` and file reads release the GIL.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

CHUNK_BYTES = 16 << 20

_lock = threading.Lock()
_pending: dict[tuple[str, int, int], _Job] = {}


class _Job:
    def __init__(self, path: Path) -> None:
        self.path, self.result, self.error = path, None, None
        self.thread = threading.Thread(target=self._run, name="chclip-sha256", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = _hash_file(self.path)
        except OSError as error:
            self.error = error


def _key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


def start_sha256(path: str | Path) -> None:
    """Begin hashing ``path`` in the background (once per file version); errors surface in :func:`sha256_of`."""
    path = Path(path)
    try:
        key = _key(path)
    except OSError:
        return  # the caller's own checks will name the problem
    with _lock:
        if key not in _pending and path.is_file():
            _pending[key] = _Job(path)


def sha256_of(path: str | Path) -> str:
    """The hex SHA-256 of ``path``: the background result if one was started, else computed now."""
    path = Path(path)
    with _lock:
        job = _pending.pop(_key(path), None)
    if job is None:
        return _hash_file(path)
    job.thread.join()
    if job.error is not None:
        raise job.error
    return job.result


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()

"""What is on disk and what is in memory: digests of files and folders, and the pages of a tensor mapped in."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch


def tree_sha256(path: Path) -> str | None:
    """SHA-256 of a file, or of every file below a folder in name order; ``None`` if there is nothing."""
    if path.is_dir():
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


PAGE = os.sysconf("SC_PAGE_SIZE")


def present_pages(tensor: torch.Tensor) -> tuple[int, int]:
    """(pages of ``tensor`` mapped into this process, pages it spans), from /proc/self/pagemap (bit 63)."""
    start = tensor.data_ptr()
    first, last = start // PAGE, (start + tensor.nbytes - 1) // PAGE
    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(first * 8)
        entries = pagemap.read((last - first + 1) * 8)
    present = sum(int.from_bytes(entries[i : i + 8], "little") >> 63 for i in range(0, len(entries), 8))
    return present, last - first + 1


@contextlib.contextmanager
def locked_folder(*inner: str) -> Iterator[tuple[Path, Path]]:
    """``(base, locked)``: a fresh folder and, inside it, ``locked`` (mode 000, holding the ``inner`` subfolders),
    seen while the block runs as a user other than its owner — root looks as nobody, through its effective uid.
    Made outside pytest's root-only temporary folder, which nobody could not reach; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="chclip-locked-"))
    locked = base / "locked"
    locked.mkdir()
    for name in inner:
        (locked / name).mkdir(parents=True)
    base.chmod(0o755)
    locked.chmod(0o000)
    as_root = os.geteuid() == 0
    try:
        if as_root:
            os.seteuid(65534)
        try:
            yield base, locked
        finally:
            if as_root:
                os.seteuid(0)
    finally:
        locked.chmod(0o755)
        shutil.rmtree(base)


def in_small_disk(tmp_path: Path, size: str, script: str) -> subprocess.CompletedProcess:
    """Run ``script`` (sh) with ``$DISK`` a fresh tmpfs of ``size`` in a mount namespace of its own (as root, or
    as a user mapped to root), then list what the disk holds afterwards. ``$PY`` runs the command line."""
    disk = tmp_path / "disk"
    disk.mkdir()
    wrapped = f'mount -t tmpfs -o size={size} tmpfs "$DISK" && {{ {script}; }}; echo "rc=$?"; ls -A "$DISK"'
    command = shlex.join([sys.executable, "-m", "chclip_convert"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISK": str(disk), "PY": command}
    return subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", wrapped],
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip

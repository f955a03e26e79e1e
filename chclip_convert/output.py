"""Every output — a converted folder, a reversed ``.pt`` file — is checked before anything is written, filled
at a temporary path beside it, and moved into place only when complete. An existing output is replaced only
with ``overwrite``, and only after the new one is complete; the input is never written to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

PARTIAL_SUFFIX = ".chclip-partial"
OLD_SUFFIX = ".chclip-old"


def check_output_dir(output_dir: str | Path, *, input_path: str | Path | None, overwrite: bool) -> Path:
    """Refuse a folder output that is or holds the input, is a file, or is not empty without ``overwrite``."""
    output_dir = Path(output_dir).expanduser()
    if input_path is not None and Path(input_path).resolve().is_relative_to(output_dir.resolve()):
        raise OutputError(
            f"the output folder would hold or replace the input checkpoint {Path(input_path).resolve()}; "
            "choose another folder.",
            path=output_dir,
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError("exists and is a file, not a folder; choose a folder path.", path=output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise OutputError(
            "exists and is not empty; nothing was written. Pass --overwrite (overwrite=True) to replace it "
            "once the new folder is complete, or choose another path.",
            path=output_dir,
        )
    _check_writable_parent(output_dir)
    return output_dir


def check_output_file(output: str | Path, *, input_folder: str | Path, overwrite: bool) -> Path:
    """Refuse a file output that is a folder, exists without ``overwrite``, or lies inside the input folder."""
    output = Path(output).expanduser()
    if output.is_dir():
        raise OutputError("is a folder; give the path of the .pt file to write.", path=output)
    if output.exists() and not overwrite:
        raise OutputError("exists; pass --overwrite (overwrite=True) to replace it.", path=output)
    if output.resolve().is_relative_to(Path(input_folder).resolve()):
        raise OutputError(
            f"lies inside the folder being reversed ({input_folder}), which is never written to; choose a path "
            "outside it.",
            path=output,
        )
    _check_writable_parent(output)
    return output


def _check_writable_parent(output: Path) -> None:
    parent = output.resolve().parent
    while not parent.exists() and parent != parent.parent:  # the folder that will hold the new ones
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write in its parent folder {parent} (permission denied); choose a folder you can write to.",
            path=output,
        )


@contextlib.contextmanager
def atomic_output(target: str | Path, *, overwrite: bool, folder: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` — a fresh empty folder, or (``folder=False``) a file path to
    write — and move it into place when the block ends without error.

    On any error the temporary path is removed and ``target`` is left as it was; a failed write (``OSError``)
    becomes an :class:`OutputError`. A temporary path left by a killed run (``NAME.chclip-partial``) is removed
    by the next run.
    """
    target = Path(target)
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove(partial)
        if folder:
            partial.mkdir()
    except OSError as error:
        raise OutputError(
            f"cannot create the output: {error.strerror or error}; choose a folder you can write to.", path=target
        ) from error
    try:
        yield partial
        _move_into_place(partial, target, overwrite)
    except OSError as error:
        _remove(partial)
        raise OutputError(
            f"writing failed: {error.strerror or error}; nothing was changed. Free space or fix the permissions "
            "of the target's folder, then run again.",
            path=target,
        ) from error
    except BaseException:
        _remove(partial)
        raise


def _move_into_place(partial: Path, target: Path, overwrite: bool) -> None:
    """Rename ``partial`` to ``target``. A file replaces an existing one in one step (``os.replace``); an existing
    folder is set aside first and restored if the rename fails."""
    if target.exists() and not overwrite and (target.is_file() or any(target.iterdir())):
        raise OutputError("appeared while writing and is not empty; nothing was replaced.", path=target)
    if partial.is_file() or not target.exists():
        os.replace(partial, target)
        return
    old = target.with_name(target.name + OLD_SUFFIX)
    _remove(old)
    target.rename(old)
    try:
        partial.rename(target)
    except OSError:
        old.rename(target)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

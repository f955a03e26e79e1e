"""The output folder: checked before anything is written, filled in a temporary folder beside it, and
renamed into place only when complete. An existing folder is replaced only with ``overwrite``, and only
after the new one is complete.
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
    """Refuse an output that is the input, is a file, or is a non-empty folder without ``overwrite``."""
    output_dir = Path(output_dir).expanduser()
    resolved = output_dir.resolve()
    if input_path is not None:
        source = Path(input_path).resolve()
        if source.is_relative_to(resolved):
            raise OutputError(
                f"the output folder would hold or replace the input checkpoint {source}; choose another folder.",
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
    parent = resolved.parent
    while not parent.exists() and parent != parent.parent:  # the folder that will hold the new ones
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write in its parent folder {parent} (permission denied); choose a folder you can write to.",
            path=output_dir,
        )
    return output_dir


@contextlib.contextmanager
def atomic_output_dir(output_dir: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``output_dir``; on success, move it into place.

    On any error the temporary folder is removed and ``output_dir`` is left as it was. A temporary
    folder left by a killed run (``NAME.chclip-partial``) is removed by the next run.
    """
    output_dir = Path(output_dir)
    partial = output_dir.with_name(output_dir.name + PARTIAL_SUFFIX)
    old = output_dir.with_name(output_dir.name + OLD_SUFFIX)
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove(partial)
        partial.mkdir()
    except OSError as error:
        raise OutputError(
            f"cannot create the output folder: {error.strerror or error}; choose a folder you can write to.",
            path=output_dir,
        ) from error
    try:
        yield partial
        _swap_into_place(partial, output_dir, old, overwrite)
    except OSError as error:
        _remove(partial)
        raise OutputError(
            f"writing failed: {error.strerror or error}; nothing was changed. Free space or fix the permissions "
            "of the target's folder, then run again.",
            path=output_dir,
        ) from error
    except BaseException:
        _remove(partial)
        raise


def _swap_into_place(partial: Path, output_dir: Path, old: Path, overwrite: bool) -> None:
    if output_dir.exists():
        if any(output_dir.iterdir()) and not overwrite:
            raise OutputError("appeared while converting and is not empty; nothing was replaced.", path=output_dir)
        _remove(old)
        output_dir.rename(old)
        try:
            partial.rename(output_dir)
        except OSError:
            old.rename(output_dir)
            raise
        _remove(old)
    else:
        partial.rename(output_dir)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

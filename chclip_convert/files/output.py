"""Every output — a converted folder, a reversed ``.pt`` file — is claimed, checked, filled at a temporary path
of its own beside it, and moved into place only when complete. An existing output is replaced only with
``overwrite``, and only after the new one is complete; the input is never written to. One writer at a time
per output (:func:`output_lock`); docs/conversion.md, "Writing safely", says what a user sees.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import itertools
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from chclip_convert.errors import ConversionError, OutputError
from chclip_convert.names import EXPORT_REPORT_FILE, REPORT_FILE

PARTIAL_SUFFIX = ".chclip-partial"
OLD_SUFFIX = ".chclip-old"
# A file each kind of folder a writer publishes (a converted folder, its onnx/) holds only once complete: written
# into the temporary folder after everything the checks vouch for, before the folder is moved into place whole.
COMPLETE_MARKERS = (REPORT_FILE, EXPORT_REPORT_FILE)
LOCK_SUFFIX = ".chclip-lock"


class OutputBusyError(OutputError):
    """Another conversion (another process or thread) is writing this output right now."""


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


def check_output_file(
    output: str | Path,
    *,
    input_folder: str | Path | None = None,
    input_files: Sequence[str | Path] = (),
    overwrite: bool,
) -> Path:
    """Refuse a file output that is a folder, exists without ``overwrite``, lies inside the input folder or is one
    of the input files."""
    output = Path(output).expanduser()
    if output.is_dir():
        raise OutputError("is a folder; give the path of the .pt file to write.", path=output)
    if any(output.resolve() == Path(path).expanduser().resolve() for path in input_files):
        raise OutputError("is one of the inputs, which are never written to; choose another path.", path=output)
    if output.exists() and not overwrite:
        raise OutputError("exists; pass --overwrite (overwrite=True) to replace it.", path=output)
    if input_folder is not None and output.resolve().is_relative_to(Path(input_folder).resolve()):
        raise OutputError(
            f"lies inside the folder being reversed ({input_folder}), which is never written to; choose a path "
            "outside it.",
            path=output,
        )
    _check_writable_parent(output)
    return output


def _check_writable_parent(output: Path) -> None:
    parent = _existing_parent(output)
    if not parent.is_dir():
        raise OutputError(f"cannot be created: {parent} is a file, not a folder; choose another path.", path=output)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write in its parent folder {parent} (permission denied); choose a folder you can write to.",
            path=output,
        )


def _existing_parent(output: Path) -> Path:
    """The nearest folder above ``output`` that exists (the one that will hold the new ones)."""
    parent = output.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def output_path(target: str | Path) -> Path:
    """The one absolute path every writer of ``target`` uses: ``~`` expanded, ``.`` and ``..`` resolved, and a
    symbolic link followed (its target is what gets replaced, so the link stays valid)."""
    path = Path(os.path.abspath(Path(target).expanduser()))
    if path.is_symlink():
        path = path.resolve()
    if not path.name:
        raise OutputError("is the root folder; choose a folder inside it.", path=target)
    return path


_held: dict[Path, tuple[int, int]] = {}  # lock file → (owning thread, depth): the lock is re-entrant per thread
_held_guard = threading.Lock()


@contextlib.contextmanager
def output_lock(target: str | Path) -> Iterator[None]:
    """Hold the one writer's lock of ``target`` for the block; raise :class:`OutputBusyError` at once if another
    process or thread holds it. Re-entrant within one thread (a conversion's steps nest).

    The lock is ``flock`` on ``.NAME.chclip-lock`` beside the target, removed when the outermost block ends
    (a killed writer's is removed by the next writer). Entering it also tidies what a killed writer of this
    target left: temporary paths are removed, and a folder set aside while being replaced is put back if the
    replacement never arrived.
    """
    target = output_path(target)
    lock_path = target.with_name(f".{target.name}{LOCK_SUFFIX}")
    me = threading.get_ident()
    with _held_guard:  # claimed before the flock, so that two threads of one process never both try it
        owner, depth = _held.get(lock_path, (None, 0))
        _held[lock_path] = (me, depth + 1 if owner == me else 1) if owner in (None, me) else (owner, depth)
    if owner == me:
        try:
            yield
        finally:
            with _held_guard:
                _held[lock_path] = (me, _held[lock_path][1] - 1)
        return
    if owner is not None:
        raise _busy(target, "another conversion in this process")
    try:
        _check_writable_parent(target)
        created = _make_parents(target.parent, target)
        fd = _acquire(lock_path, target)
    except BaseException:
        with _held_guard:
            del _held[lock_path]
        raise
    try:
        _tidy(target)
        yield
    finally:
        with _held_guard:
            del _held[lock_path]
        with contextlib.suppress(OSError):
            lock_path.unlink()  # before the unlock: a writer that opened it meanwhile sees it gone and retries
        os.close(fd)
        for folder in reversed(created):  # folders made only to hold the lock, left empty by a refusal
            with contextlib.suppress(OSError):
                folder.rmdir()


def _make_parents(folder: Path, target: Path) -> list[Path]:
    """Create ``folder`` and the missing folders above it; return those created, outermost first."""
    missing = list(itertools.takewhile(lambda path: not path.exists(), [folder, *folder.parents]))[::-1]
    try:
        for path in missing:
            path.mkdir()
    except OSError as error:
        raise _cannot_create(error, target) from error
    return missing


def _cannot_create(error: OSError, target: Path) -> OutputError:
    return OutputError(
        f"cannot create the output: {error.strerror or error}; choose a folder you can write to.", path=target
    )


def _acquire(lock_path: Path, target: Path) -> int:
    """Open and ``flock`` the lock file; return its descriptor. A lock file removed by the writer that held it
    (between our open and our lock) is no lock: try again on the new one."""
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise _cannot_create(error, target) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise _busy(target, f"another conversion (process {holder})" if holder else "another conversion") from None
        if _same_file(fd, lock_path):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return text if text.isdigit() else ""
    return ""


def _busy(target: Path, who: str) -> OutputBusyError:
    return OutputBusyError(
        f"{who} is writing this output right now; nothing was written. Wait for it to finish, or choose another path.",
        path=target,
    )


def _tidy(target: Path) -> None:
    """What a killed writer of ``target`` left: its temporary paths, and a folder it set aside to replace — put
    back if the replacement never arrived, removed once a complete replacement stands in its place."""
    for partial in target.parent.glob(f"{glob.escape(target.name)}{PARTIAL_SUFFIX}*"):
        _remove(partial)
    old = target.with_name(target.name + OLD_SUFFIX)
    try:
        if old.exists() and not target.exists() and not target.is_symlink():
            old.rename(target)  # killed between setting the user's folder aside and moving the new one in
        elif old.is_dir() and any((target / name).is_file() for name in COMPLETE_MARKERS):
            _remove(old)  # killed after the new folder was in place, before the old one was removed
    except OSError as error:
        raise OutputError(
            f"cannot restore {old.name}, which a stopped writer set aside ({error.strerror or error}); move it "
            "back by hand.",
            path=target,
        ) from error


@contextlib.contextmanager
def atomic_output(target: str | Path, *, overwrite: bool, folder: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` — a fresh empty folder, or (``folder=False``) a file path to
    write — and move it into place when the block ends without error, holding :func:`output_lock` throughout.

    On any error the temporary path is removed and ``target`` is left as it was; a failed write (an ``OSError``,
    or a library's own error for one, see :func:`write_failure`) becomes an :class:`OutputError`.
    """
    target = output_path(target)
    with output_lock(target):
        # A name no other writer uses, made with mkdir so that the published folder has the umask's mode.
        holder = target.with_name(f"{target.name}{PARTIAL_SUFFIX}-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            holder.mkdir()
        except OSError as error:
            raise _cannot_create(error, target) from error
        partial = holder if folder else holder / target.name
        try:
            yield partial
            _move_into_place(partial, target, overwrite)
        except BaseException as error:
            failure = write_failure(error, target)  # before the removal frees the space a full disk lacked
            if failure is not None:
                raise failure from error
            raise
        finally:
            _remove(holder)


def write_failure(error: BaseException, target: Path) -> OutputError | None:
    """The :class:`OutputError` a failed write of ``target`` is, or ``None`` if ``error`` is not one.

    Besides ``OSError``: the tokenizers library raises a plain ``Exception`` worded ``… (os error 28)``, and
    ``torch.save`` a ``RuntimeError`` from its zip writer (``PytorchStreamWriter failed writing file``,
    ``[enforce fail at inline_container.cc…] unexpected pos``) when the disk fills.
    """
    if isinstance(error, ConversionError) or not isinstance(error, Exception):
        return None
    reason = _write_reason(error, target)
    if reason is None:
        return None
    advice = _ADVICE.get(reason, "fix the cause")
    return OutputError(
        f"writing failed: {reason}; nothing was changed. {advice.capitalize()}, then run again.", path=target
    )


_ADVICE = {  # what to do about a failed write, by its reason
    os.strerror(errno.ENOSPC): "free space on that disk",
    **dict.fromkeys(map(os.strerror, (errno.EACCES, errno.EPERM, errno.EROFS)), "write to a folder you may write to"),
}
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_TORCH_WRITER = ("PytorchStreamWriter", "inline_container.cc", "unexpected pos")


def _write_reason(error: Exception, target: Path) -> str | None:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    text = str(error)
    if found := _OS_ERROR.search(text):
        return os.strerror(int(found.group(1)))
    if isinstance(error, RuntimeError) and any(mark in text for mark in _TORCH_WRITER):
        return _disk_state(target) or f"torch could not write the file ({text.splitlines()[0][:120]})"
    return None


def _disk_state(target: Path) -> str | None:
    """``No space left on device`` when the target's disk is (nearly) full — what torch's own message hides."""
    with contextlib.suppress(OSError):
        if shutil.disk_usage(_existing_parent(target)).free < 1 << 20:
            return os.strerror(errno.ENOSPC)
    return None


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
    except BaseException:  # a failed rename, or Ctrl-C between the two: the user's folder goes back
        old.rename(target)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()

"""The small JSON records of a folder (``conversion_report.json``, ``config.json``, …), read without torch, so
that the widgets' light side reads them too. Every problem is a :class:`CheckpointReadError` naming the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chclip_convert.errors import CheckpointReadError
from chclip_convert.names import REPORT_FILE


def read_json(folder: str | Path, name: str) -> dict[str, Any] | None:
    """The JSON object in ``folder/name``, or ``None`` if there is no such file."""
    file = Path(folder) / name
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as error:
        raise CheckpointReadError(f"cannot read {name}: {error.strerror or error}.", path=folder) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        message = f"{name} is not valid JSON ({error}); restore it or convert again."
        raise CheckpointReadError(message, path=folder) from error
    if not isinstance(data, dict):
        raise CheckpointReadError(f"{name} holds {type(data).__name__}, not a JSON object.", path=folder)
    return data


def read_report(folder: str | Path) -> dict[str, Any] | None:
    """The folder's ``conversion_report.json`` (what this tool recorded of the conversion), or ``None``.

    Raises:
        CheckpointReadError: naming the folder, if the file cannot be read or is not a JSON object.
    """
    return read_json(folder, REPORT_FILE)


def shareable_path(path: str | Path, folder: str | Path) -> str:
    """``path`` as a record meant for sharing holds it: relative to ``folder`` when the two share a folder below
    the filesystem's root (``../run/checkpoints/epoch3.pt``), else the file's name alone; never absolute."""
    path, folder = Path(os.path.abspath(Path(path).expanduser())), Path(os.path.abspath(Path(folder).expanduser()))
    common = os.path.commonpath([path, folder])
    return path.name if common == path.anchor else os.path.relpath(path, folder)


def named_alone(report: dict[str, Any] | None) -> str | None:
    """The source's file name, if ``report`` names its source by that alone: what :func:`shareable_path` records
    for a checkpoint that shares no folder with the converted one but the root."""
    source = (report or {}).get("source")
    return source if isinstance(source, str) and source and Path(source).name == source else None


PATHS_FIELD = "paths"  # conversion_report.json: "relative" (to the folder) or "absolute"; older reports lack it
RELATIVE, ABSOLUTE = "relative", "absolute"


def recorded_source(folder: str | Path, report: dict[str, Any] | None) -> Path | None:
    """The checkpoint ``report`` (the folder's ``conversion_report.json``) names as its source, or ``None``.

    A path recorded relative to the folder is taken from the folder; an absolute one (``--record-paths``, and
    folders written before paths were recorded relative) as it is, and so is an older report's relative path,
    which was relative to where the conversion ran.
    """
    source = (report or {}).get("source")
    if not isinstance(source, str) or not source:
        return None
    if (report or {}).get(PATHS_FIELD) == RELATIVE:
        return Path(os.path.normpath(Path(os.path.abspath(folder)) / source))
    return Path(source)

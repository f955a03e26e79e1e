"""Looking inside a conversion without writing anything: the key report, also when the conversion would
stop, and its rows filtered and printed."""

from __future__ import annotations

import re
from pathlib import Path

from chclip_convert.conversion.state_dict import convert_state_dict
from chclip_convert.errors import MappingError
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.mapping.report import PROBLEM_STATUSES, ConversionReport


def inspect_checkpoint(checkpoint: str | Path, **options) -> ConversionReport:
    """The full key report for ``checkpoint``, also when the conversion would stop on problems.

    ``options`` are passed to :func:`convert_state_dict` (``config``, ``vision_heads``, ...).
    """
    source = load_checkpoint(checkpoint)
    try:
        return convert_state_dict(source.state_dict, path=source.path, **options).report
    except MappingError as error:
        return error.report


class NameFilterError(ValueError):
    """A name filter written as a regular expression that does not compile; ``str(error)`` says why."""


def name_pattern(text: str, *, regex: bool = False) -> re.Pattern[str] | None:
    """The pattern a name filter searches keys with (case-insensitive), or ``None`` for an empty filter.

    Plain text matches as written, except that a number at either end of it matches whole numbers only:
    ``resblocks.1`` finds ``resblocks.1.attn.in_proj_weight``, not ``resblocks.10`` or ``resblocks.11``.
    With ``regex``, ``text`` is a Python regular expression, searched as written; one that does not compile
    raises :class:`NameFilterError`.
    """
    text = text.strip()
    if not text:
        return None
    if not regex:
        text = (r"(?<!\d)" if text[0].isdigit() else "") + re.escape(text) + (r"(?!\d)" if text[-1].isdigit() else "")
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as error:
        raise NameFilterError(f"not a regular expression: {error}") from None


def filter_rows(rows: list[dict], *, status: str = "all", text: str = "", regex: bool = False) -> list[dict]:
    """Rows whose status is ``status`` (any, for ``"all"``; any problem, for ``"problems"``) and whose key or
    counterpart matches the name filter ``text`` (see :func:`name_pattern`)."""
    pattern = name_pattern(text, regex=regex)
    return [row for row in rows if _status_matches(row["status"], status) and _name_matches(row, pattern)]


def _status_matches(row_status: str, status: str) -> bool:
    return status in ("all", row_status) or (status == "problems" and row_status in PROBLEM_STATUSES)


def _name_matches(row: dict, pattern: re.Pattern[str] | None) -> bool:
    return pattern is None or bool(pattern.search(row["key"]) or pattern.search(row["counterpart"]))


def shape_text(shape: list[int] | None, *, times: str = "×") -> str:
    """``[384, 128]`` → ``384×128``; a scalar is ``scalar``, no tensor ``-``."""
    return "-" if shape is None else times.join(map(str, shape)) or "scalar"


def rows_to_text(rows: list[dict]) -> str:
    """The same rows as aligned plain text (for printing and for comparing notebook outputs)."""
    lines = [f"{'side':6} {'status':14} {'shape':16} {'dtype':8} key  ←→ counterpart"]
    for row in rows:
        lines.append(
            f"{row['side']:6} {row['status']:14} {shape_text(row['shape'], times='x'):16} {row['dtype'] or '-':8} "
            f"{row['key']}  ←→ {row['counterpart'] or '-'}"
        )
    return "\n".join(lines)

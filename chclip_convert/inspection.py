"""Looking inside a conversion without writing anything: the key report, also when the conversion would
stop, and its rows filtered and printed."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import load_checkpoint
from .convert import convert_state_dict
from .errors import MappingError
from .report import PROBLEM_STATUSES, ConversionReport


def inspect_checkpoint(checkpoint: str | Path, **options) -> ConversionReport:
    """The full key report for ``checkpoint``, also when the conversion would stop on problems.

    ``options`` are passed to :func:`convert_state_dict` (``config``, ``vision_heads``, ...).
    """
    source = load_checkpoint(checkpoint)
    try:
        return convert_state_dict(source.state_dict, path=source.path, **options).report
    except MappingError as error:
        return error.report


def filter_rows(rows: list[dict], *, status: str = "all", text: str = "") -> list[dict]:
    """Rows whose status is ``status`` (or any, for ``"all"``/``"problems"``) and whose key or
    counterpart contains ``text``."""
    problem = set(PROBLEM_STATUSES)
    needle = text.strip().lower()
    return [
        row
        for row in rows
        if (status == "all" or row["status"] == status or (status == "problems" and row["status"] in problem))
        and (not needle or needle in row["key"].lower() or needle in row["counterpart"].lower())
    ]


def rows_to_text(rows: list[dict]) -> str:
    """The same rows as aligned plain text (for printing and for comparing notebook outputs)."""
    lines = [f"{'side':6} {'status':14} {'shape':16} {'dtype':8} key  ←→ counterpart"]
    for row in rows:
        shape = "x".join(map(str, row["shape"])) if row["shape"] is not None else "-"
        lines.append(
            f"{row['side']:6} {row['status']:14} {shape or 'scalar':16} {row['dtype'] or '-':8} "
            f"{row['key']}  ←→ {row['counterpart'] or '-'}"
        )
    return "\n".join(lines)

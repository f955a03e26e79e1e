"""Looking inside a conversion without writing anything: the key report, also when the conversion would
stop, and its rows filtered and printed."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from chclip_convert.conversion.state_dict import convert_state_dict
from chclip_convert.errors import MappingError
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.mapping.report import PROBLEM_STATUSES, ConversionReport
from chclip_convert.mapping.table import find_reverse_rule, find_rule

T = TypeVar("T")


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


class NameFilter:
    """Whether a thing with several names (a key and its counterparts) is what a name filter asks for: every
    word of the filter (the one regular expression, with ``regex``) matches at least one of its names."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...]) -> None:
        self.patterns = patterns

    def matches(self, names: Iterable[str]) -> bool:
        """Whether every word matches one of ``names`` (empty names are skipped)."""
        names = [name for name in names if name]
        return all(any(pattern.search(name) for name in names) for pattern in self.patterns)

    def filter(self, items: Iterable[T], names: Callable[[T], Iterable[str]]) -> list[T]:
        """The ``items`` whose ``names(item)`` match, in order."""
        return [item for item in items if self.matches(names(item))] if self.patterns else list(items)


def name_filter(text: str, *, regex: bool = False) -> NameFilter:
    """The name filter every search and filter of keys uses (the key grid, the comparison, the histogram's
    search, ``chclip-convert inspect --name``); case-insensitive, and empty text matches everything.

    Plain text is words, each of which must match one of a thing's names (its key or a counterpart) as
    written, except that a number at either end of a word matches whole numbers only: ``resblocks.1`` finds
    ``resblocks.1.attn.in_proj_weight``, not ``resblocks.10``. With ``regex``, ``text`` is one Python regular
    expression, searched as written; one that does not compile raises :class:`NameFilterError`.
    """
    text = text.strip()
    words = ([text] if text else []) if regex else [_whole_numbers(word) for word in text.split()]
    try:
        return NameFilter(tuple(re.compile(word, re.IGNORECASE) for word in words))
    except re.error as error:
        raise NameFilterError(f"not a regular expression: {error}") from None


def _whole_numbers(word: str) -> str:
    """``word`` as a literal pattern whose number at either end does not continue into more digits."""
    return (r"(?<!\d)" if word[0].isdigit() else "") + re.escape(word) + (r"(?!\d)" if word[-1].isdigit() else "")


def other_names(key: str) -> tuple[str, ...]:
    """``key`` under the other naming, by the mapping table: an original key's transformers names (three, for
    a fused q/k/v), a transformers key's original name; none where the table has no rule for it."""
    found = find_rule(key)
    if found is not None:
        rule, index = found
        return rule.expand(index)[1]
    found = find_reverse_rule(key)
    if found is not None:
        rule, index = found
        return (rule.expand(index)[0],)
    return ()


def filter_rows(rows: list[dict], *, status: str = "all", text: str = "", regex: bool = False) -> list[dict]:
    """Rows whose status is ``status`` (any, for ``"all"``; any problem, for ``"problems"``) and whose key or
    counterparts match the name filter ``text`` (see :func:`name_filter`)."""
    wanted = name_filter(text, regex=regex).filter(rows, row_names)
    return [row for row in wanted if _status_matches(row["status"], status)]


def key_names(key: str) -> tuple[str, ...]:
    """``key`` and its names under the other naming (:func:`other_names`): what a name search matches."""
    return (key, *other_names(key))


def row_names(row: dict) -> list[str]:
    """A report row's names: its key under both namings, and each counterpart the report found (a source key's
    targets are joined by commas; a missing target key has none, but the table still names its source)."""
    return [*key_names(row["key"]), *filter(None, row["counterpart"].split(", "))]


def _status_matches(row_status: str, status: str) -> bool:
    return status in ("all", row_status) or (status == "problems" and row_status in PROBLEM_STATUSES)


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

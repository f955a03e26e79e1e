"""Sizes and durations as people read them, for messages and tables."""

from __future__ import annotations


def human_size(nbytes: float) -> str:
    """``755.1 MB`` (decimal units, as file browsers show them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """``8 s``, ``2 min 05 s``."""
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"

"""A font with Chinese glyphs for the plots: matplotlib's own (DejaVu Sans) has none, so captions would show
empty boxes. Noto Sans CJK SC (SIL Open Font License 1.1), from Debian's ``fonts-noto-cjk`` when installed,
else from the ``mplfonts`` package the ``notebooks`` extra installs (only that file of it is used)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

CJK_FAMILY = "Noto Sans CJK SC"
DEBIAN_FILES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf"),
)
MPLFONTS_FILE = ("fonts", "NotoSansCJKsc-Regular.otf")


def cjk_font_file() -> Path | None:
    """The Noto Sans CJK file to use, or ``None`` if neither Debian's nor mplfonts' is installed."""
    found = importlib.util.find_spec("mplfonts")  # the location only: the package itself is not imported
    packaged = [Path(found.submodule_search_locations[0]).joinpath(*MPLFONTS_FILE)] if found else []
    return next((file for file in (*DEBIAN_FILES, *packaged) if file.is_file()), None)


@cache
def use_cjk_font() -> str | None:
    """Register the CJK font with matplotlib and add it as the fallback of the sans-serif fonts, so any
    Chinese text renders; return its family name (``None``, and nothing changed, if it is not installed)."""
    file = cjk_font_file()
    if file is None:
        return None
    from matplotlib import font_manager, rcParams

    font_manager.fontManager.addfont(str(file))
    if CJK_FAMILY not in rcParams["font.sans-serif"]:
        rcParams["font.sans-serif"] = [*rcParams["font.sans-serif"], CJK_FAMILY]
    return CJK_FAMILY

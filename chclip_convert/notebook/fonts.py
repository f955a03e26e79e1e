"""A font with Chinese glyphs, for the plots and for the HTML the notebooks show: matplotlib's own font (DejaVu
Sans) has none, and neither has a browser without a CJK font installed, so Chinese would show as empty boxes.
Noto Sans CJK SC (SIL Open Font License 1.1), from Debian's ``fonts-noto-cjk`` when installed, else from the
``mplfonts`` package the ``notebooks`` extra installs (only that file of it is used). Without either, nothing
changes: the plots use matplotlib's fonts and the HTML is left as it is.

The HTML gets the font as a subset of exactly the glyphs it needs, served with it in a CSS ``@font-face`` rule
as a ``data:`` URL (a few kB for a few dozen characters; building one takes half a second to a second)."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CJK_FAMILY = "Noto Sans CJK SC"
DEBIAN_FILES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf"),
)
MPLFONTS_FILE = ("fonts", "NotoSansCJKsc-Regular.otf")
CJK = re.compile(
    "[\u2e80-\u2fdf\u3000-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe10-\ufe1f\ufe30-\ufe4f"
    "\uff00-\uffef\U00020000-\U0003ffff]"
)
"""A character a page's Latin fonts have no glyph for: CJK scripts (Han, kana, hangul), their punctuation and
full-width forms."""
WEB_FLAVOR = "woff2" if importlib.util.find_spec("brotli") else "woff"  # woff2 compresses with brotli
# Tables a fallback for single characters in horizontal text does without: layout features, vertical metrics.
UNUSED_TABLES = ("GSUB", "GPOS", "BASE", "VORG", "vhea", "vmtx")
PAGE_FONTS = {"": "var(--jp-ui-font-family, sans-serif)", " :is(pre, code)": "var(--jp-code-font-family, monospace)"}
"""The page's fonts, which the served font follows, for the text and (as in the browser's own style) code."""


@dataclass(frozen=True)
class WebFont:
    """A subset of the CJK font served to a browser: its family name and the ``@font-face`` rule carrying it."""

    family: str
    css: str


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


def cjk_characters(text: str) -> str:
    """The distinct CJK characters of ``text``, sorted: what a subset for it must cover."""
    return "".join(sorted(set(CJK.findall(text))))


def cjk_web_font(text: str) -> WebFont | None:
    """The CJK font cut down to the CJK characters of ``text``, with a family name of its own (so several on one
    page never replace each other); ``None`` if ``text`` has none or no CJK font is installed. Cached per set of
    characters."""
    characters = cjk_characters(text)
    return _web_font(characters) if characters else None


@cache
def _web_font(characters: str) -> WebFont | None:
    file = cjk_font_file()
    if file is None:
        return None
    family = f"chclip-cjk-{hashlib.sha1(characters.encode()).hexdigest()[:10]}"
    data = base64.b64encode(font_subset(file, characters)).decode("ascii")
    source = f'url("data:font/{WEB_FLAVOR};base64,{data}") format("{WEB_FLAVOR}")'
    return WebFont(family, f'@font-face {{ font-family: "{family}"; src: {source}; }}')


def font_subset(file: Path, characters: str) -> bytes:
    """The glyphs of ``characters`` from the Noto Sans CJK SC of ``file`` (a font or a collection), as a web
    font file (woff2 when brotli is installed, else woff)."""
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(file, fontNumber=_sc_font_number(file), lazy=True)  # lazy: reads only the tables it needs
    options = subset.Options(layout_features=[])
    options.drop_tables += UNUSED_TABLES
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=characters)
    subsetter.subset(font)
    font.flavor, out = WEB_FLAVOR, io.BytesIO()
    font.save(out)
    return out.getvalue()


@cache
def _sc_font_number(file: Path) -> int:
    """Which font of a collection (Debian's has JP, KR, SC, TC, HK, each also Mono) is Noto Sans CJK SC; -1
    (TTFont's default) for a file of one font."""
    from fontTools.ttLib import TTCollection

    if file.suffix.lower() != ".ttc":
        return -1
    names = [font["name"].getDebugName(1) for font in TTCollection(file, lazy=True).fonts]
    return names.index(CJK_FAMILY)


def cjk_html(fragment: str) -> str:
    """``fragment`` (HTML) in an element whose fonts are the page's followed by the CJK font served for its
    characters, so its Chinese shows in any browser; ``fragment`` itself if it has no CJK or no font is found."""
    font = cjk_web_font(fragment)
    if font is None:
        return fragment
    rules = " ".join(
        f'.{font.family}{within} {{ font-family: {fonts}, "{font.family}"; }}' for within, fonts in PAGE_FONTS.items()
    )
    return f"<style>{font.css} {rules}</style><div class='{font.family}'>{fragment}</div>"

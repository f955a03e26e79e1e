"""Notebook 04's caption ranking in a real browser (Voila and Debian's Chromium): its Chinese is drawn with the
font subset the page was sent, not a system font. This machine has Noto Sans CJK installed, so only Chromium's
own account of the fonts it drew each text node with (DevTools' ``CSS.getPlatformFontsForNode``) tells the two
apart: a font the page brought is a custom (web) font."""

from __future__ import annotations

from support.browser import PAGE_TIMEOUT_MS, SHOTS, open_notebook

from chclip_convert.notebook.fonts import CJK, cjk_font_file
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS

CAPTION = "ol.caption-ranking li"


def platform_fonts(page, selector: str) -> list[list[dict]]:
    """For each element matching ``selector``, the fonts Chromium drew its text with (``familyName``,
    ``isCustomFont``, ``glyphCount``)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    nodes = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": selector})["nodeIds"]
    return [cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"] for node in nodes]


def test_the_caption_ranking_draws_its_chinese_with_the_served_font(voila_url, page):
    assert cjk_font_file() is not None, "Noto Sans CJK is needed: scripts/test.sh installs fonts-noto-cjk"
    open_notebook(page, voila_url, "04_verify_and_save.ipynb")
    ranking = page.locator("ol.caption-ranking")
    ranking.wait_for(timeout=PAGE_TIMEOUT_MS)
    page.evaluate("document.fonts.ready")
    assert sorted(ranking.locator("li").all_inner_texts()) == sorted(SAMPLE_CAPTIONS)
    ranking.screenshot(path=SHOTS / "04_caption_ranking.png")
    texts = ranking.locator("li").all_inner_texts()
    for text, fonts in zip(texts, platform_fonts(page, CAPTION), strict=True):
        served = [font for font in fonts if font["isCustomFont"]]
        assert served and all(font["glyphCount"] > 0 for font in served), (text, fonts)
        # Every Chinese character from the served font: the page's own fonts have none, the system's is unused.
        assert sum(font["glyphCount"] for font in served) == len(CJK.findall(text)), (text, fonts)

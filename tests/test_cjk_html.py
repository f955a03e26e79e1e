"""The CJK font served to the notebooks' HTML: a subset of exactly the Chinese of a text, in a ``data:`` URL of an
``@font-face`` rule, under a family name of its own; and the widgets that show Chinese wrapped in it."""

from __future__ import annotations

import base64
import io
import re

import pytest
from fontTools.ttLib import TTFont

from chclip_convert.notebook import fonts
from chclip_convert.notebook.captions import CaptionRanking
from chclip_convert.notebook.fonts import CJK_FAMILY, cjk_characters, cjk_font_file, cjk_html, cjk_web_font
from chclip_convert.notebook.save import SaveUI
from chclip_convert.verification.model_outputs import SAMPLE_CAPTIONS

pytestmark = pytest.mark.skipif(cjk_font_file() is None, reason="no Noto Sans CJK: fonts-noto-cjk or mplfonts")
CAPTIONS = " ".join(SAMPLE_CAPTIONS)


def served_font(css: str) -> TTFont:
    """The font in the ``data:`` URL of ``css``, read back."""
    data = re.search(r'url\("data:font/(?:woff2?);base64,([A-Za-z0-9+/=]+)"\)', css)
    assert data, css[:200]
    return TTFont(io.BytesIO(base64.b64decode(data.group(1))))


def test_the_rule_carries_a_font_with_exactly_the_texts_chinese():
    font = cjk_web_font(CAPTIONS)
    served = served_font(font.css)
    # the SC font of the collection; mplfonts' single-font file names its family "Noto Sans CJK SC Regular"
    assert re.fullmatch(f"{CJK_FAMILY}( Regular)?", served["name"].getDebugName(1))
    covered = {chr(code) for code in served.getBestCmap()}
    assert covered == set(cjk_characters(CAPTIONS)) == set("一位穿军装的女士只猫辆红色汽车山水画狗")
    assert font.css.startswith(f'@font-face {{ font-family: "{font.family}"; src: url("data:font/woff')
    assert len(font.css) < 12_000  # 19 characters: a few kB


def test_each_set_of_characters_has_a_family_of_its_own_built_once():
    assert cjk_web_font(CAPTIONS).family != cjk_web_font("一只猫").family
    assert cjk_web_font("猫只一 cat") is cjk_web_font("一只猫")  # the same characters: the same font, cached


def test_text_without_chinese_gets_no_font():
    fragment = "<code>/home/me/model.pt</code> café"
    assert cjk_web_font(fragment) is None and cjk_html(fragment) == fragment


def test_without_a_cjk_font_installed_the_html_is_unchanged(monkeypatch):
    monkeypatch.setattr(fonts, "cjk_font_file", lambda: None)
    monkeypatch.setattr(fonts, "_web_font", fonts._web_font.__wrapped__)  # not the cache of the installed font
    assert cjk_html("<b>山水画</b>") == "<b>山水画</b>"


def test_the_html_is_wrapped_in_the_pages_fonts_then_the_served_one():
    wrapped = cjk_html("<b>一只猫</b>")
    family = cjk_web_font("一只猫").family
    assert wrapped.endswith(f"<div class='{family}'><b>一只猫</b></div>")
    assert f'.{family} {{ font-family: var(--jp-ui-font-family, sans-serif), "{family}"; }}' in wrapped
    assert f'.{family} :is(pre, code) {{ font-family: var(--jp-code-font-family, monospace), "{family}"; }}' in wrapped
    assert cjk_web_font("一只猫").css in wrapped


def test_the_caption_ranking_shows_the_captions_from_most_likely_in_the_font():
    ranking = CaptionRanking(SAMPLE_CAPTIONS, [0.1, 0.3, 0.2, 0.35, 0.05])
    assert repr(ranking) == "1 山水画\n2 一只猫\n3 一辆红色的汽车\n4 一位穿军装的女士\n5 a photo of 一只狗"
    assert ranking._repr_mimebundle_()["text/plain"] == repr(ranking)  # what the saved notebook stores
    assert "<li>山水画</li><li>一只猫</li>" in ranking.value and cjk_web_font(CAPTIONS).css in ranking.value


def test_the_save_widget_shows_a_chinese_path_in_the_font(tmp_path):
    ui = SaveUI(tmp_path / "模型" / "missing.pt", tmp_path / "out")
    assert "模型" in ui.message.value and cjk_web_font(str(tmp_path / "模型")).css in ui.message.value

"""The sample photo's captions ranked by the converted model, shown in HTML with a font for their Chinese."""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as W

from chclip_convert.notebook.fonts import cjk_html


class CaptionRanking(W.HTML):
    """The captions numbered from most to least likely; as text (what a saved notebook stores, and nbval
    compares) the same numbered lines, which stay the same where the probabilities' last digits do not."""

    def __init__(self, captions: Sequence[str], probabilities: Sequence[float]) -> None:
        order = sorted(range(len(captions)), key=lambda index: float(probabilities[index]), reverse=True)
        self.ranked = [captions[index] for index in order]
        items = "".join(f"<li>{html.escape(caption)}</li>" for caption in self.ranked)
        super().__init__(cjk_html(f"<ol class='caption-ranking' style='margin:0'>{items}</ol>"))

    def __repr__(self) -> str:
        return "\n".join(f"{rank} {caption}" for rank, caption in enumerate(self.ranked, start=1))

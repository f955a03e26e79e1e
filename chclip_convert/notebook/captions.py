"""The sample photo's captions ranked by a model (or several side by side), in HTML with a font for their Chinese."""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as W
import numpy as np

from chclip_convert.notebook.elements import wrapping_layout
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


AGREES = "picks the reference's best caption, or one within its error of it"
DISAGREES = "picks ANOTHER best caption, beyond its error"


class RankingComparison(W.HBox):
    """A :class:`CaptionRanking` per runtime side by side (``reference`` first), titled; as text, the reference's
    ranking and for each other runtime whether its best caption agrees — the same on every CPU, where an int8
    model's order of two near-tied captions need not be."""

    def __init__(self, captions: Sequence[str], logits: dict[str, np.ndarray], reference: str) -> None:
        from chclip_convert.export.zero_shot import best_caption_agrees

        self.rankings = {
            name: CaptionRanking(captions, values) for name, values in logits.items()
        }  # logits: same order
        self.agrees = {
            name: best_caption_agrees(values, logits[reference]) for name, values in logits.items() if name != reference
        }
        self.reference = reference
        columns = [
            W.VBox([W.HTML(f"<b>{html.escape(name)}</b>"), ranking], layout=W.Layout(margin="0 32px 8px 0"))
            for name, ranking in self.rankings.items()
        ]
        super().__init__(columns, layout=wrapping_layout())

    def _repr_mimebundle_(self, **kwargs) -> dict:
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)  # whole: ipywidgets cuts a widget's text at 110 characters
        return bundle

    def __repr__(self) -> str:
        lines = [f"{self.reference}:", repr(self.rankings[self.reference])]
        lines += [f"{name}: {AGREES if ok else DISAGREES}" for name, ok in self.agrees.items()]
        return "\n".join(lines)

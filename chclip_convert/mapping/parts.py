"""Where a tensor sits — its tower, and its layer or a named section outside the layers — from its name alone,
original or transformers'; and the one notation for a set of layer numbers, in prose and inside a key.

This is the one place that decides the tower by a name's prefix: the diff, the drift, the weight statistics,
their figures and the reverse conversion all ask :func:`part_of`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from chclip_convert.mapping.table import split_layer_index

VISION, TEXT, SHARED = "vision", "text", "shared"
TOWERS = (VISION, TEXT, SHARED)
LAYER, EMBEDDINGS, PROJECTION, NORM, LOGIT_SCALE, OTHER = (
    "layer", "embeddings", "projection", "norm", "logit_scale", "other"
)  # fmt: skip
SECTION_ORDER = (EMBEDDINGS, NORM, LAYER, PROJECTION, LOGIT_SCALE, OTHER)

# A name's tower by its first characters: transformers' names, then the original ones.
TOWER_PREFIXES = {
    VISION: ("vision_model.", "visual_projection", "visual."),
    TEXT: ("text_model.", "text_projection", "bert."),
}


@dataclass(frozen=True, order=True)
class Part:
    """Where a tensor sits: its tower, and a layer number or a named section outside the layers."""

    tower: str
    section: str
    layer: int = -1  # -1 outside the layers

    @property
    def label(self) -> str:
        return layer_span([self.layer]) if self.section == LAYER else self.section.replace("_", " ")

    def sort_key(self) -> tuple:
        return TOWERS.index(self.tower), SECTION_ORDER.index(self.section), self.layer


def tower_of(name: str) -> str:
    """:data:`VISION`, :data:`TEXT` or :data:`SHARED` (``logit_scale``, and any name of neither tower)."""
    return next((tower for tower, prefixes in TOWER_PREFIXES.items() if name.startswith(prefixes)), SHARED)


def part_of(name: str) -> Part:
    """The tower and layer (or section) of a tensor name, transformers' or original."""
    tower, layer = tower_of(name), split_layer_index(name)[1]
    if layer is not None:
        return Part(tower, LAYER, layer)
    if "embedding" in name:
        return Part(tower, EMBEDDINGS)
    if "projection" in name or name == "visual.proj":
        return Part(tower, PROJECTION)
    if name == "logit_scale":
        return Part(tower, LOGIT_SCALE)
    if "norm" in name or ".ln_" in name:
        return Part(tower, NORM)
    return Part(tower, OTHER)


def fold_layers(parts: Iterable[Part], folds: Callable[[Part], bool]) -> Iterator[Part | list[Part]]:
    """``parts`` in order, with each run of consecutive layers of one tower for which ``folds`` holds given as
    one list (what the summaries print as ``layers 0–8``); every other part alone."""
    run: list[Part] = []
    for part in parts:
        folded = part.section == LAYER and folds(part)
        if folded and (not run or (part.tower == run[-1].tower and part.layer == run[-1].layer + 1)):
            run.append(part)
            continue
        if run:
            yield run
        run = [part] if folded else []
        if not folded:
            yield part
    if run:
        yield run


def span_label(run: list[Part]) -> str:
    """``layer 9`` for one layer, ``layers 0–8`` for a run of them."""
    return layer_span([part.layer for part in run])


def layer_span(numbers: Sequence[int], *, in_key: bool = False) -> str:
    """The one notation for a set of layer numbers (at least one).

    In prose, as the diff and drift summaries print them: ``layer 3``, ``layers 0–8``, ``layers 0–2, 5``.
    Inside a key (``in_key``), as transformers' loading report collapses names: ``3``, ``{0...8}``, or where
    numbers are missing between, each one: ``{0,2,5}``.

    Example:
        >>> layer_span([2, 0, 1]), layer_span([0, 1, 2], in_key=True), layer_span([0, 2], in_key=True)
        ('layers 0–2', '{0...2}', '{0,2}')
    """
    numbers = sorted(set(numbers))
    runs = _runs(numbers)
    if in_key:
        if len(numbers) == 1:
            return str(numbers[0])
        return f"{{{numbers[0]}...{numbers[-1]}}}" if len(runs) == 1 else "{" + ",".join(map(str, numbers)) + "}"
    spans = ", ".join(str(first) if first == last else f"{first}–{last}" for first, last in runs)
    return f"{'layer' if len(numbers) == 1 else 'layers'} {spans}"


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct numbers as (first, last) of each run of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], number)
        else:
            runs.append((number, number))
    return runs

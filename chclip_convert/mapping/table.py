"""The mapping between original Chinese-CLIP names and transformers ``ChineseCLIPModel`` names, as data.

A :class:`Rule` ties one source name template to one or more target templates and an op from
:mod:`chclip_convert.mapping.ops`. Layer numbers appear as ``{i}``; a key is looked up by replacing its first
all-digit path component with ``{i}`` and hitting the table exactly — no regular expressions, no
substring replacements whose order matters.

Two source layouts exist: the standard one that training saves, and the flash-attention one that a raw
``state_dict()`` of a ``--use-flash-attention`` model holds. Both map to the same targets; the reverse
direction (transformers → original) uses the standard rules only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from chclip_convert.mapping.ops import IDENTITY, SPLIT_QKV, TRANSPOSE, Op

STANDARD = "standard"
FLASH = "flash-attention"


@dataclass(frozen=True)
class Rule:
    """``source`` (original name template) becomes ``targets`` (transformers templates) through ``op``."""

    source: str
    targets: tuple[str, ...]
    op: Op = IDENTITY
    layout: str = STANDARD

    def expand(self, index: int | None) -> tuple[str, tuple[str, ...]]:
        """The concrete source and target names for layer ``index`` (``None`` for non-layer rules)."""
        if index is None:
            return self.source, self.targets
        return self.source.format(i=index), tuple(t.format(i=index) for t in self.targets)


VISION_LAYER = "visual.transformer.resblocks.{i}"
HF_VISION_LAYER = "vision_model.encoder.layers.{i}"
TEXT_LAYER = "bert.encoder.layer.{i}"
HF_TEXT_LAYER = "text_model.encoder.layer.{i}"


def _params(source: str, target: str, layout: str = STANDARD) -> list[Rule]:
    """Rules for a module's ``weight`` and ``bias`` under a plain rename."""
    return [Rule(f"{source}.{p}", (f"{target}.{p}",), layout=layout) for p in ("weight", "bias")]


def _fused(source_weight: str, source_bias: str, target: str, parts: tuple[str, ...], layout: str) -> list[Rule]:
    """Rules that split a fused q/k/v weight and bias into three projections, in q, k, v order.

    ``target`` holds ``<part>`` and ``<param>`` placeholders (``{i}`` stays for the layer index).
    """

    def names(param: str) -> tuple[str, ...]:
        return tuple(target.replace("<part>", part).replace("<param>", param) for part in parts)

    return [
        Rule(source_weight, names("weight"), SPLIT_QKV, layout),
        Rule(source_bias, names("bias"), SPLIT_QKV, layout),
    ]


_VISION_QKV = (f"{HF_VISION_LAYER}.self_attn.<part>_proj.<param>", ("q", "k", "v"))
_TEXT_QKV = (f"{HF_TEXT_LAYER}.attention.self.<part>.<param>", ("query", "key", "value"))
_TEXT_WQKV = f"{TEXT_LAYER}.attention.self.Wqkv"  # the flash-attention layout's fused text q/k/v

_VISION_RULES = [
    Rule("visual.conv1.weight", ("vision_model.embeddings.patch_embedding.weight",)),
    Rule("visual.class_embedding", ("vision_model.embeddings.class_embedding",)),
    Rule("visual.positional_embedding", ("vision_model.embeddings.position_embedding.weight",)),
    *_params("visual.ln_pre", "vision_model.pre_layrnorm"),
    *_params("visual.ln_post", "vision_model.post_layernorm"),
    Rule("visual.proj", ("visual_projection.weight",), TRANSPOSE),
    *_params(f"{VISION_LAYER}.ln_1", f"{HF_VISION_LAYER}.layer_norm1"),
    *_params(f"{VISION_LAYER}.ln_2", f"{HF_VISION_LAYER}.layer_norm2"),
    *_params(f"{VISION_LAYER}.attn.out_proj", f"{HF_VISION_LAYER}.self_attn.out_proj"),
    *_params(f"{VISION_LAYER}.mlp.c_fc", f"{HF_VISION_LAYER}.mlp.fc1"),
    *_params(f"{VISION_LAYER}.mlp.c_proj", f"{HF_VISION_LAYER}.mlp.fc2"),
    *_fused(f"{VISION_LAYER}.attn.in_proj_weight", f"{VISION_LAYER}.attn.in_proj_bias", *_VISION_QKV, STANDARD),
    *_fused(f"{VISION_LAYER}.attn.Wqkv.weight", f"{VISION_LAYER}.attn.Wqkv.bias", *_VISION_QKV, FLASH),
]

# Names below `bert.` are the same in transformers below `text_model.` (no pooler there).
_BERT_NAMES = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
]
_BERT_LAYER_MODULES = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
]

_TEXT_RULES = [
    *(Rule(f"bert.{name}", (f"text_model.{name}",)) for name in _BERT_NAMES),
    *(
        rule
        for module in _BERT_LAYER_MODULES
        for rule in _params(f"{TEXT_LAYER}.{module}", f"{HF_TEXT_LAYER}.{module}")
    ),
    *_fused(f"{_TEXT_WQKV}.weight", f"{_TEXT_WQKV}.bias", *_TEXT_QKV, FLASH),
    *_params(f"{TEXT_LAYER}.attention.self.out_proj", f"{HF_TEXT_LAYER}.attention.output.dense", FLASH),
    Rule("text_projection", ("text_projection.weight",), TRANSPOSE),
]

RULES: tuple[Rule, ...] = (Rule("logit_scale", ("logit_scale",)), *_VISION_RULES, *_TEXT_RULES)

# Source keys that are dropped on purpose, with the reason the report gives.
IGNORED: dict[str, str] = {
    "bert.pooler.dense.weight": "BERT pooler: unused by Chinese-CLIP (commented out in cn_clip's BertModel)",
    "bert.pooler.dense.bias": "BERT pooler: unused by Chinese-CLIP (commented out in cn_clip's BertModel)",
}

# Target keys that may appear in older transformers folders but hold nothing to convert back.
REVERSE_IGNORED: dict[str, str] = {
    "text_model.embeddings.position_ids": "buffer (saved by older transformers versions), rebuilt at load",
    "text_model.embeddings.token_type_ids": "buffer (saved by older transformers versions), rebuilt at load",
    "vision_model.embeddings.position_ids": "buffer (saved by older transformers versions), rebuilt at load",
}

RULES_BY_SOURCE: dict[str, Rule] = {rule.source: rule for rule in RULES}
# Reverse lookup for transformers → original: standard layout only, keyed by every target of a rule.
RULES_BY_TARGET: dict[str, Rule] = {
    target: rule for rule in RULES if rule.layout == STANDARD for target in rule.targets
}


def standard_rules_by_layer(vision_layers: int, text_layers: int) -> Iterator[tuple[Rule, int | None]]:
    """Every standard-layout rule with each layer index it applies to in a model of these depths
    (``None`` for rules outside the layers): the whole set of names a complete checkpoint has."""
    for rule in RULES:
        if rule.layout == STANDARD:
            layers = vision_layers if rule.source.startswith(VISION_LAYER) else text_layers  # a layer rule's tower
            for index in range(layers) if "{i}" in rule.source else [None]:
                yield rule, index


def split_layer_index(key: str) -> tuple[str, int | None]:
    """``"a.b.3.c"`` → ``("a.b.{i}.c", 3)``; a key without a numeric component is returned unchanged."""
    parts = key.split(".")
    for position, part in enumerate(parts):
        if part.isdigit():
            parts[position] = "{i}"
            return ".".join(parts), int(part)
    return key, None


def find_rule(source_key: str) -> tuple[Rule, int | None] | None:
    """The rule for a concrete source key and its layer index, or ``None`` if the table has none."""
    template, index = split_layer_index(source_key)
    rule = RULES_BY_SOURCE.get(template)
    return None if rule is None or (index is None) != ("{i}" not in rule.source) else (rule, index)


def is_flash_layout(keys: Iterable[str]) -> bool:
    """Whether original tensor names are in the flash-attention layout (fused ``Wqkv``), by the table's rules."""
    return any((found := find_rule(key)) is not None and found[0].layout == FLASH for key in keys)


def find_reverse_rule(target_key: str) -> tuple[Rule, int | None] | None:
    """The standard rule that fills ``target_key`` (alone or with others), with its layer index."""
    template, index = split_layer_index(target_key)
    rule = RULES_BY_TARGET.get(template)
    return None if rule is None else (rule, index)

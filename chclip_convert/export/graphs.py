"""What each exported ONNX model computes, under the names transformers.js and optimum give its inputs and outputs.

- ``model.onnx``: both towers, as ``ChineseCLIPModel.forward`` (optimum's ``chinese_clip`` config, what
  transformers.js's ``ChineseCLIPModel`` loads): ``input_ids``, ``attention_mask``, ``pixel_values`` in;
  ``logits_per_image``, ``logits_per_text``, ``text_embeds``, ``image_embeds`` (L2-normalised) out.
- ``text_model.onnx``: ``input_ids``, ``attention_mask`` in; ``text_embeds`` out, the projected [CLS] state
  before normalisation, as ``get_text_features`` (transformers.js's ``CLIPTextModelWithProjection``).
- ``vision_model.onnx``: ``pixel_values`` in; ``image_embeds`` out, projected and not normalised, as
  ``get_image_features`` (transformers.js's ``CLIPVisionModelWithProjection``).

``token_type_ids`` is no input: Chinese-CLIP always uses type 0, which the model fills in itself, and neither
optimum's config nor transformers.js passes it to these models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

COMBINED, TEXT, VISION = "model", "text_model", "vision_model"


@dataclass(frozen=True)
class GraphSpec:
    """One exported model: its file stem, input and output names, and each input's dynamic axes by name."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]

    def file_name(self, suffix: str = "") -> str:
        """``model.onnx``, or with a variant's suffix ``model_fp16.onnx``."""
        return f"{self.name}{suffix}.onnx"


_TEXT_AXES = {0: "text_batch_size", 1: "sequence_length"}
GRAPHS = (
    GraphSpec(
        COMBINED,
        ("input_ids", "attention_mask", "pixel_values"),
        ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"),
        {"input_ids": _TEXT_AXES, "attention_mask": _TEXT_AXES, "pixel_values": {0: "image_batch_size"}},
    ),
    GraphSpec(
        TEXT,
        ("input_ids", "attention_mask"),
        ("text_embeds",),
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
        },
    ),
    GraphSpec(VISION, ("pixel_values",), ("image_embeds",), {"pixel_values": {0: "batch_size"}}),
)
GRAPH_BY_NAME = {graph.name: graph for graph in GRAPHS}


class CombinedGraph(torch.nn.Module):
    """``ChineseCLIPModel.forward``'s four outputs as a tuple, in ``GRAPHS``' order."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, pixel_values):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        return out.logits_per_image, out.logits_per_text, out.text_embeds, out.image_embeds


class TextGraph(torch.nn.Module):
    """The projected text feature (``get_text_features``): the [CLS] state through ``text_projection``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


class VisionGraph(torch.nn.Module):
    """The projected image feature (``get_image_features``): ``post_layernorm`` of the class token, projected."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


WRAPPERS = {COMBINED: CombinedGraph, TEXT: TextGraph, VISION: VisionGraph}


def wrap(model, graph: GraphSpec) -> torch.nn.Module:
    """``model`` (a float32 ``ChineseCLIPModel`` in eval mode) as the module ``graph`` exports."""
    return WRAPPERS[graph.name](model).eval()


def run_torch(model, graph: GraphSpec, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``graph``'s outputs by name from the PyTorch model: the reference every exported file is checked against."""
    with torch.no_grad():
        result = wrap(model, graph)(*(inputs[name] for name in graph.inputs))
    result = result if isinstance(result, tuple) else (result,)
    return dict(zip(graph.outputs, result, strict=True))

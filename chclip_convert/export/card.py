"""The README section on the ONNX files: which exist, how they were checked, and how to load them.

It lies between two HTML comments, so that exporting again replaces it and leaves the rest of the card alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from chclip_convert.export.report import ExportReport
from chclip_convert.units import human_size

BEGIN, END = "<!-- chclip-convert: onnx -->", "<!-- /chclip-convert: onnx -->"


def onnx_section(report: ExportReport, onnx_folder: str) -> str:
    """The section's Markdown; ``onnx_folder`` is the ONNX folder's path relative to the card (``onnx``)."""
    files = "\n".join(f"| `{onnx_folder}/{name}` | {human_size(size)} |" for name, size in sorted(report.files.items()))
    verdict = "every check passed" if report.ok else f"{len(report.failures)} checks FAILED (kept with --keep-failed)"
    original = ", and against cn_clip's own model on the source checkpoint" if report.original_checkpoint else ""
    return f"""{BEGIN}
## ONNX

Exported by chclip-convert at opset {report.opset}, and run by onnxruntime on a photo and five captions at
batch 1 and a larger batch against this folder's PyTorch model{original}: {verdict}
(`{onnx_folder}/export_report.json`).

| file | size |
|---|---|
{files}

`model*.onnx` holds both towers: `input_ids`, `attention_mask`, `pixel_values` in; `logits_per_image`,
`logits_per_text`, `text_embeds`, `image_embeds` (L2-normalised) out. `text_model*.onnx` gives `text_embeds`
and `vision_model*.onnx` gives `image_embeds`, both projected and not normalised. Batch sizes and the text
length are free. `_fp16` files compute in float16 with float32 inputs and outputs; `_quantized` files hold
8-bit weights (unsigned where the image tower is, as transformers.js's q8 files). A `.onnx_data` file beside a
model holds its weights (models above 2 GB).

```python
import onnxruntime
from transformers import ChineseCLIPProcessor

processor = ChineseCLIPProcessor.from_pretrained("path/to/this/folder", backend="pil")
session = onnxruntime.InferenceSession("path/to/this/folder/{onnx_folder}/model.onnx")
inputs = processor(text=["一只猫"], images=image, padding="max_length", max_length=52, return_tensors="np")
feeds = {{name: inputs[name] for name in ("input_ids", "attention_mask", "pixel_values")}}
logits_per_image = session.run(["logits_per_image"], feeds)[0]
```

```js
import {{ env, AutoTokenizer, ChineseCLIPFeatureExtractor, ChineseCLIPModel, RawImage }}
  from "@huggingface/transformers";
env.allowRemoteModels = false;
env.localModelPath = "path/to/";  // the folder that holds this one
const model = await ChineseCLIPModel.from_pretrained("this-folder", {{ dtype: "fp32" }});  // or "fp16", "q8"
const tokenizer = await AutoTokenizer.from_pretrained("this-folder");
// AutoProcessor does not know the name ChineseCLIPImageProcessor (transformers 5's); this class reads the same file
const processor = await ChineseCLIPFeatureExtractor.from_pretrained("this-folder");
const text = tokenizer(["一只猫", "一只狗"], {{ padding: "max_length", max_length: 52, truncation: true }});
const {{ logits_per_image }} = await model({{ ...text, ...(await processor(await RawImage.read("photo.jpg"))) }});
```
{END}
"""


def write_section(card: Path, section: str) -> None:
    """Put ``section`` into the Markdown file ``card``: in place of an earlier one, else at its end. The file is
    replaced in one step (written beside, then renamed), so a reader never sees half of it."""
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    start, end = text.find(BEGIN), text.find(END)
    if start != -1 and end > start:
        text = text[:start] + section.rstrip("\n") + text[end + len(END) :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    partial = card.with_name(f".{card.name}.chclip-partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, card)

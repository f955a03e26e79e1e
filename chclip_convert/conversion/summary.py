"""What a conversion read, found and wrote: one structure, rendered as text (the CLI), HTML (the widget),
a model card (``README.md`` in the folder) and JSON (``conversion_report.json``)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from chclip_convert.conversion.provenance import ALGORITHM, card_section
from chclip_convert.files.checkpoint import TRAINING_KEYS
from chclip_convert.mapping.architecture import Architecture
from chclip_convert.mapping.report import ConversionReport

USAGE = """```python
from transformers import ChineseCLIPModel, ChineseCLIPProcessor

model = ChineseCLIPModel.from_pretrained("path/to/this/folder")
# backend="pil" resizes exactly as cn_clip does; transformers' default torchvision backend (when
# torchvision is installed) resizes slightly differently (pixel values differ by up to ~0.015).
processor = ChineseCLIPProcessor.from_pretrained("path/to/this/folder", backend="pil")
```"""

TRAINING_FIELD = "training"  # conversion_report.json: the source's epoch, step and run name (null where absent)
TRAINING_LABELS = {"epoch": "epoch", "step": "step", "name": "run"}


def describe_training(training: dict) -> str:
    """The training metadata present in ``training``, in words: ``epoch 1, step 1000, run muge_finetune``."""
    present = [key for key in TRAINING_KEYS if training.get(key) is not None]
    return ", ".join(f"{TRAINING_LABELS[key]} {training[key]}" for key in present)


@dataclass(frozen=True)
class ConversionSummary:
    """What a conversion read, found and wrote; complete when built."""

    output_dir: Path
    source: Path
    source_weights_digest: str  # see chclip_convert.conversion.provenance
    source_sha256: str | None  # of the whole file, only when asked for (file_sha256=True, --sha256)
    wrapper: str
    skipped: tuple[str, ...]  # entries of the file not read (optimizer state, ...)
    architecture: Architecture
    report: ConversionReport
    parameter_count: int
    config_dtype: str
    dtypes_written: dict[str, int]
    files: tuple[str, ...]
    vocabulary: str
    seconds: float
    warnings: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)  # options that shape the folder, read back by verify
    training: dict = field(default_factory=dict)  # a training dict's epoch, step and name; {} for a bare one

    def facts(self, *, shareable: bool = False) -> list[tuple[str, str]]:
        """(label, value) rows; ``shareable`` leaves out what only this machine knows (paths, time)."""
        dtypes = ", ".join(f"{name} × {count}" for name, count in sorted(self.dtypes_written.items()))
        not_read = f"; not read: {', '.join(self.skipped)}" if self.skipped else ""
        rows = [
            ("source", f"{self.source.name} ({self.wrapper}{not_read})"),
            *([("training", trained)] if (trained := describe_training(self.training)) else []),
            ("weights digest", self.source_weights_digest),
            *([("file SHA-256", self.source_sha256)] if self.source_sha256 else []),
            ("architecture", self.architecture.description),
            ("image size", f"{self.architecture.image_size} px"),
            ("parameters", f"{self.parameter_count:,}"),
            ("dtype", f"config {self.config_dtype}; tensors {dtypes}"),
            ("report", self.report.summary()),
        ]
        if not shareable:
            rows += [
                ("tokenizer", self.vocabulary),
                ("files", ", ".join(self.files)),
                ("written to", str(self.output_dir)),
                ("time", f"{self.seconds:.1f} s"),
            ]
        return rows

    def to_text(self) -> str:
        lines = [f"Converted {self.source.name} → {self.output_dir}"]
        lines += [f"  {label + ':':16}{value}" for label, value in self.facts()]
        lines += [f"  note: {note}" for note in self.report.notes]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def to_html(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(label)}</th>"
            f"<td>{html.escape(value)}</td></tr>"
            for label, value in self.facts()
        )
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in self.report.notes)
        notes += "".join(f"<li><b>warning:</b> {html.escape(warning)}</li>" for warning in self.warnings)
        return f"<b>Converted.</b><table>{cells}</table>" + (f"<ul>{notes}</ul>" if notes else "")

    def model_card(self) -> str:
        """The folder's ``README.md``: where the weights came from and what the conversion found."""
        rows = "\n".join(f"| {label} | {value} |" for label, value in self.facts(shareable=True))
        noted = "\n".join(
            [*(f"- {note}" for note in self.report.notes), *(f"- warning: {warning}" for warning in self.warnings)]
        )
        return f"""---
library_name: transformers
pipeline_tag: zero-shot-image-classification
tags:
- chinese-clip
- converted
---

# Chinese-CLIP ({self.architecture.description})

Converted from an original Chinese-CLIP checkpoint (cn_clip format) by chclip-convert.

| | |
|---|---|
{rows}

Notes:
{noted or "- none"}

{USAGE}

{card_section(self.source.name, self.source_sha256 is not None)}"""

    def to_dict(self) -> dict:
        return {
            "output_dir": str(self.output_dir),
            "source": str(self.source),
            "source_weights_digest": self.source_weights_digest,
            "source_weights_digest_algorithm": ALGORITHM,
            "source_sha256": self.source_sha256,
            "wrapper": self.wrapper,
            "skipped": list(self.skipped),
            "architecture": self.architecture.to_dict(),
            "parameter_count": self.parameter_count,
            "config_dtype": self.config_dtype,
            "dtypes_written": self.dtypes_written,
            "files": list(self.files),
            "vocabulary": self.vocabulary,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "overrides": self.overrides,
            TRAINING_FIELD: {key: self.training.get(key) for key in TRAINING_KEYS},  # read back by reverse
            "report": self.report.to_dict(),
        }

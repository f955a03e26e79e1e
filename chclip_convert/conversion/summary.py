"""What a conversion read, found and wrote: one structure, rendered as text (the CLI), HTML (the widget),
a model card (``README.md`` in the folder) and JSON (``conversion_report.json``)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from chclip_convert.conversion.provenance import ALGORITHM, card_section
from chclip_convert.files.checkpoint import TRAINING_KEYS, describe_average, describe_training
from chclip_convert.files.records import ABSOLUTE, PATHS_FIELD, RELATIVE, shareable_path
from chclip_convert.mapping.architecture import Architecture
from chclip_convert.mapping.report import ConversionReport

USAGE = """```python
from transformers import ChineseCLIPModel, ChineseCLIPProcessor

model = ChineseCLIPModel.from_pretrained("path/to/this/folder")
# backend="pil" resizes exactly as cn_clip does; transformers' default torchvision backend (when
# torchvision is installed) resizes slightly differently (pixel values differ by up to ~0.015).
processor = ChineseCLIPProcessor.from_pretrained("path/to/this/folder", backend="pil")
```"""

# The Hub's example for a zero-shot image classifier: a public sample image and Chinese labels to choose from.
WIDGET = {
    "src": "https://huggingface.co/datasets/mishig/sample_images/resolve/main/cat-dog-music.png",
    "candidate_labels": "猫和狗, 演奏音乐, 运动",
    "example_title": "猫和狗",
}
UPLOAD = """## Sharing this folder

With huggingface_hub's `hf` command (it creates the repository if it does not exist; add `--private` for a
private one):

```bash
hf auth login                                   # once, with a token that may write
hf upload YOUR-NAME/MODEL-NAME path/to/this/folder .
```

`conversion_report.json` records the checkpoint's path relative to this folder, never this machine's own paths."""

TRAINING_FIELD = "training"  # conversion_report.json: the source's epoch, step and run name (null where absent)


@dataclass(frozen=True)
class CardOptions:
    """What the folder's model card says for the Hub beyond the conversion: a licence and the model fine-tuned.

    ``license`` is a Hub licence id (``apache-2.0``, ``mit``, ``other``, …); ``base_model`` the Hub id of the
    model the weights were fine-tuned from (``OFA-Sys/chinese-clip-vit-base-patch16``), recorded with
    ``base_model_relation: finetune``."""

    license: str | None = None
    base_model: str | None = None

    def front_matter(self) -> str:
        """The card's YAML front matter, as huggingface_hub's ``ModelCardData`` writes it."""
        from huggingface_hub import ModelCardData

        data = ModelCardData(
            library_name="transformers", pipeline_tag="zero-shot-image-classification", language="zh",
            license=self.license, base_model=self.base_model,
            tags=["chinese-clip", "clip", "vision", "converted"], widget=[WIDGET],
            **({"base_model_relation": "finetune"} if self.base_model else {}),
        )  # fmt: skip
        return data.to_yaml() + "\n"


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
    card: CardOptions = field(default_factory=CardOptions)
    record_paths: bool = False  # the report holds absolute paths; by default relative to the folder

    def facts(self, *, shareable: bool = False) -> list[tuple[str, str]]:
        """(label, value) rows; ``shareable`` leaves out what only this machine knows (paths, time)."""
        dtypes = ", ".join(f"{name} × {count}" for name, count in sorted(self.dtypes_written.items()))
        not_read = f"; not read: {', '.join(self.skipped)}" if self.skipped else ""
        rows = [
            ("source", f"{self.source.name} ({self.wrapper}{not_read})"),
            *([("training", trained)] if (trained := describe_training(self.training)) else []),
            *([("average of", averaged)] if (averaged := describe_average(self.training)) else []),
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
{self.card.front_matter()}---

# Chinese-CLIP ({self.architecture.description})

Converted from an original Chinese-CLIP checkpoint (cn_clip format) by chclip-convert.

| | |
|---|---|
{rows}

Notes:
{noted or "- none"}

{USAGE}

{UPLOAD}

{card_section(self.source.name, self.source_sha256 is not None)}"""

    def to_dict(self) -> dict:
        source = str(self.source.absolute()) if self.record_paths else shareable_path(self.source, self.output_dir)
        return {
            "output_dir": str(self.output_dir) if self.record_paths else self.output_dir.name,
            "source": source,
            PATHS_FIELD: ABSOLUTE if self.record_paths else RELATIVE,
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
            "vocabulary": self.vocabulary if self.record_paths else _file_name_first(self.vocabulary),
            "seconds": self.seconds,
            "warnings": list(self.warnings),
            "overrides": self.overrides,
            TRAINING_FIELD: {key: self.training.get(key) for key in TRAINING_KEYS},  # read back by reverse
            "report": self.report.to_dict(),
        }


def _file_name_first(text: str) -> str:
    """``/a/b/vocab.txt (beside the checkpoint)`` → ``vocab.txt (beside the checkpoint)``: no folder of this machine."""
    path, sep, rest = text.partition(" (")
    return f"{Path(path).name}{sep}{rest}" if Path(path).is_absolute() else text

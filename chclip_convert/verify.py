"""Verification of a converted folder against its original checkpoint.

With cn_clip installed, both models run on the same photo and captions, each through its own
preprocessing and tokenizer, and their outputs are compared against stated tolerances. Without cn_clip,
and in any case, what needs no original code is checked: the folder reloads, its weights equal the source
tensors through the mapping table, and the conversion round-trips bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import load_checkpoint
from .compare import (
    SAMPLE_CAPTIONS,
    differences,
    has_original,
    quiet_transformers,
    run_converted,
    run_original,
    sample_image,
)
from .convert import map_tensors
from .errors import ConversionError
from .inspection import implied_targets
from .reverse import load_folder_state, reverse_state_dict

# Tolerances by how the folder's weights relate to the source's: identical bytes, or cast to 16 bits.
# Relative = max abs difference / max abs value of the original output.
TOLERANCES = {
    "exact": {"relative": 1e-4, "cosine": 0.99999},
    "float16": {"relative": 1e-2, "cosine": 0.999},
    "bfloat16": {"relative": 5e-2, "cosine": 0.99},
}
PIXEL_TOLERANCE = 1e-5  # PIL bicubic on both sides; only float rounding of the normalisation differs


@dataclass
class Check:
    name: str
    passed: bool
    value: str
    requirement: str = ""


@dataclass
class VerifyReport:
    checkpoint: Path
    folder: Path
    original_available: bool
    precision: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, float | bool] = field(default_factory=dict)
    info: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_text(self) -> str:
        lines = [
            f"Verify {self.folder} against {self.checkpoint.name}",
            f"  weights: {self.precision}; cn_clip: {'installed' if self.original_available else 'not installed'}",
        ]
        width = max(len(c.name) for c in self.checks)
        for check in self.checks:
            mark = "PASS" if check.passed else "FAIL"
            need = f"  (needs {check.requirement})" if check.requirement else ""
            lines.append(f"  {mark}  {check.name:{width}}  {check.value}{need}")
        lines += [f"  note: {note}" for note in self.info]
        if not self.original_available:
            lines.append(
                "  cn_clip is not installed: outputs were not compared with the original model "
                "(pip install --no-deps cn_clip==1.6.0 torchvision to do so)."
            )
        lines.append("Verified: all checks pass." if self.ok else "Verification FAILED.")
        return "\n".join(lines)


def verify(
    checkpoint: str | Path,
    folder: str | Path,
    *,
    captions: list[str] | None = None,
    images: list | None = None,
    use_original: bool = True,
) -> VerifyReport:
    """Check ``folder`` (a converted ``ChineseCLIPModel``) against the original ``checkpoint``.

    Args:
        captions, images: inputs for the output comparison (default: five Chinese captions and a
            photograph that ships with matplotlib).
        use_original: compare outputs with cn_clip when it is installed.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` says whether every check passed. It raises only for
        unreadable input (a :class:`ConversionError`), never for a failed check.
    """
    quiet_transformers()
    checkpoint, folder = Path(checkpoint), Path(folder)
    source = load_checkpoint(checkpoint).state_dict
    written = load_folder_state(folder)
    implied = implied_targets(source)
    precision = _precision(implied, written)
    report = VerifyReport(checkpoint, folder, use_original and has_original(), precision)
    report.checks.append(_check_reload(folder))
    report.checks.append(_check_weights(implied, written))
    report.checks += _check_round_trips(source, written, folder)
    if report.original_available:
        _compare_outputs(report, checkpoint, folder, captions or SAMPLE_CAPTIONS, images or [sample_image()])
    return report


def _precision(implied: dict[str, tuple], written: dict[str, torch.Tensor]) -> str:
    for target, tensor in written.items():
        _, _, piece = implied.get(target, ("", "", None))
        if piece is not None and piece.dtype != tensor.dtype:
            return "bfloat16" if torch.bfloat16 in {tensor.dtype, piece.dtype} else "float16"
    return "exact"


def _check_reload(folder: Path) -> Check:
    from transformers import ChineseCLIPModel, ChineseCLIPProcessor

    try:
        ChineseCLIPModel.from_pretrained(folder)
        loaded = "model"
        if (folder / "tokenizer_config.json").is_file():
            ChineseCLIPProcessor.from_pretrained(folder)
            loaded = "model and processor"
    except Exception as error:  # any failure to load is the finding itself
        return Check("folder reloads", False, f"{type(error).__name__}: {error}")
    return Check("folder reloads", True, f"{loaded} load offline")


def _check_weights(implied: dict[str, tuple], written: dict[str, torch.Tensor]) -> Check:
    differing = []
    for target, tensor in written.items():
        _, _, piece = implied.get(target, ("", "", None))
        if piece is None or piece.shape != tensor.shape or not torch.equal(piece.to(tensor.dtype), tensor):
            differing.append(target)
    value = f"{len(written) - len(differing)}/{len(written)} tensors equal the source"
    if differing:
        value += f"; differ: {', '.join(differing[:5])}" + (" …" if len(differing) > 5 else "")
    return Check("weights equal source", not differing, value, "all")


def _check_round_trips(source: dict[str, torch.Tensor], written: dict[str, torch.Tensor], folder: Path) -> list[Check]:
    checks = []
    try:
        original = reverse_state_dict(written, path=folder)
        again, report = map_tensors(original, {key: tuple(t.shape) for key, t in written.items()})
    except ConversionError as error:
        return [Check("round trip transformers → original → transformers", False, error.message)]
    same = report.ok and all(_same_bytes(again[key], written[key]) for key in written)
    checks.append(Check("round trip transformers → original → transformers", same, "bit-exact" if same else "differs"))
    name = "round trip original → transformers → original"
    if any(".Wqkv." in key for key in source):
        checks.append(Check(name, True, "not applicable: the source is in the flash-attention layout"))
        return checks
    comparable = {k: v for k, v in source.items() if not k.startswith("bert.pooler.")}
    exact = set(comparable) == set(original) and all(
        _same_bytes(original[key], comparable[key].to(original[key].dtype)) for key in comparable
    )
    checks.append(Check(name, exact, "bit-exact (pooler aside)" if exact else "differs"))
    return checks


def _same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def _compare_outputs(report: VerifyReport, checkpoint: Path, folder: Path, captions: list[str], images: list) -> None:
    from .assets import find_vocab

    if not (folder / "tokenizer_config.json").is_file():
        report.checks.append(Check("outputs compared", False, "the folder has no tokenizer; convert with --vocab"))
        return
    vocab, _ = find_vocab(folder / "vocab.txt" if (folder / "vocab.txt").is_file() else None, checkpoint)
    if vocab is None:
        report.checks.append(Check("outputs compared", False, "no vocab.txt in the folder or beside the checkpoint"))
        return
    original = run_original(checkpoint, vocab, images, captions)
    converted = run_converted(folder, images, captions)
    found = differences(original, converted)
    report.details = found
    limits = TOLERANCES[report.precision]
    report.checks.append(
        Check("token ids equal", bool(found["token ids equal"]), str(found["token ids equal"]), "True")
    )
    pixel = found["pixel max abs diff"]
    report.checks.append(
        Check("pixel max abs diff", pixel <= PIXEL_TOLERANCE, f"{pixel:.2e}", f"≤ {PIXEL_TOLERANCE:.0e}")
    )
    for kind, a, b in (
        ("image", original.image_features, converted.image_features),
        ("text", original.text_features, converted.text_features),
        ("logits", original.logits_per_image, converted.logits_per_image),
    ):
        absolute = (a.float() - b.float()).abs().max().item()
        relative = absolute / max(a.float().abs().max().item(), 1e-12)
        report.checks.append(
            Check(
                f"{kind} max abs diff (relative)",
                relative <= limits["relative"],
                f"{absolute:.2e} ({relative:.2e})",
                f"relative ≤ {limits['relative']:.0e}",
            )
        )
    for kind in ("image", "text"):
        cosine = found[f"{kind} feature min cosine"]
        report.checks.append(
            Check(f"{kind} feature min cosine", cosine >= limits["cosine"], f"{cosine:.7f}", f"≥ {limits['cosine']}")
        )
    report.checks.append(Check("top-1 agrees", bool(found["top-1 agrees"]), str(found["top-1 agrees"]), "True"))
    report.info.append(_default_backend_note(folder, images, original.pixel_values))


def _default_backend_note(folder: Path, images: list, reference: torch.Tensor) -> str:
    """How far the processor transformers picks by default (torchvision when installed) is from cn_clip."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(folder)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    difference = (pixels - reference).abs().max().item()
    return (
        f"the default image processor ({type(processor).__name__}) gives pixels within {difference:.2e} of cn_clip's; "
        "the checks above use backend='pil', which resizes exactly as cn_clip does."
    )

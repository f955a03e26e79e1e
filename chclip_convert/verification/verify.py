"""Verification of a converted folder against its original checkpoint; docs/verification.md lists every check.

Nothing on the reference side comes from the folder under test: the expected values come from the checkpoint, the
name table, the options given to verify and a reference vocabulary (head counts are invisible in the weights, so
the folder's own record of them is never trusted). Every failing check names the keys, fields or entries at fault.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import ChineseCLIPConfig

from chclip_convert.conversion.provenance import KNOWN_ALGORITHMS, recorded_algorithm, weights_digest
from chclip_convert.conversion.reverse import reverse_state_dict
from chclip_convert.conversion.state_dict import (
    DTYPES,
    ConversionPlan,
    dtype_name,
    majority_dtype,
    map_tensors,
    plan_conversion,
)
from chclip_convert.errors import ConversionError
from chclip_convert.files.assets import find_vocab, vocab_tokens
from chclip_convert.files.checkpoint import load_checkpoint
from chclip_convert.files.folder import load_config, load_folder_state, read_overrides
from chclip_convert.files.records import read_json, read_report
from chclip_convert.files.safetensors_writer import TensorSpec
from chclip_convert.mapping.architecture import Architecture
from chclip_convert.mapping.table import IGNORED, REVERSE_IGNORED, is_flash_layout
from chclip_convert.names import (
    CONFIG_FILE,
    DTYPE_CHOICES,
    PREPROCESSOR_FILE,
    REPORT_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
    VOCAB_FILE,
)
from chclip_convert.verification.config_checks import (
    ABSENT,
    FieldDifference,
    compare_config,
    compare_preprocessor,
    compare_tokenizer_config,
)
from chclip_convert.verification.model_outputs import (
    SAMPLE_CAPTIONS,
    ModelOutputs,
    differences,
    has_original,
    original_problem,
    quiet_transformers,
    run_converted,
    run_original,
    sample_image,
)
from chclip_convert.verification.tokenizer_checks import (
    compare_ids,
    compare_vocab,
    folder_token_ids,
    folder_vocabularies,
    reference_token_ids,
)
from chclip_convert.verification.weight_check import SHAPE, FolderComparison, compare_state

if TYPE_CHECKING:
    from transformers import ChineseCLIPModel

# Tolerances by how the folder's weights relate to the source's: identical bytes, or cast to 16 bits.
# Relative = max abs difference / max abs value of the original output.
# exact: both sides compute in float32 with other kernels and summation orders; measured relative differences are
#   about 1e-6 (full-size ViT-B-16: 7e-7 image, 9e-7 text), so 1e-4 leaves a wide margin, while a mapping mistake
#   (a q/k swap, a missing bias) moves the outputs by 1e-2 and more (tests/test_verify_breaks.py).
# float16 / bfloat16: every weight is rounded once (float16 keeps 11 significant bits, ~5e-4 relative; bfloat16
#   8 bits, ~4e-3), and the roundings add up over the layers: the bounds are about 20× and 12× one rounding.
TOLERANCES = {
    "exact": {"relative": 1e-4, "cosine": 0.99999},
    "float16": {"relative": 1e-2, "cosine": 0.999},
    "bfloat16": {"relative": 5e-2, "cosine": 0.99},
}
PIXEL_TOLERANCE = 1e-5  # PIL bicubic on both sides; only float rounding of the normalisation differs


SHOWN = 4  # differing entries named in a check's one-line value; --report lists them all


# Tokenised beside the captions: casing and accents, which settings such as do_lower_case change.
TOKENIZER_PROBES = ["A Photo of a CAFÉ"]


@dataclass
class Check:
    """One finding: ``value`` names what is at fault; ``keys`` and ``fields`` list every offender."""

    name: str
    passed: bool
    value: str
    requirement: str = ""
    keys: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    """The verdict. ``original_outputs`` and ``converted_outputs`` are what both models gave when their outputs
    were compared (with cn_clip), kept so that they can be shown without running the models again."""

    checkpoint: Path
    folder: Path
    original_available: bool
    precision: str
    checks: list[Check] = field(default_factory=list)
    details: dict[str, float | bool] = field(default_factory=dict)
    info: list[str] = field(default_factory=list)
    reference_vocab: str = ""
    original_outputs: ModelOutputs | None = None
    converted_outputs: ModelOutputs | None = None
    output_checks: list[Check] = field(default_factory=list)  # those of ``checks`` comparing the two models

    def to_dict(self) -> dict:
        """The verdict, machine-readable: every check with its value, requirement, keys and fields."""
        return {
            "ok": self.ok,
            "checkpoint": str(self.checkpoint),
            "folder": str(self.folder),
            "original_available": self.original_available,
            "precision": self.precision,
            "reference_vocab": self.reference_vocab,
            "checks": [check.to_dict() for check in self.checks],
            "details": dict(self.details),
            "info": list(self.info),
        }

    @property
    def ok(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_text(self) -> str:
        lines = [
            f"Verify {self.folder} against {self.checkpoint.name}",
            f"  weights: {self.precision}; cn_clip: {'installed' if self.original_available else 'not installed'}",
        ]
        if self.reference_vocab:
            lines.append(f"  reference vocabulary: {self.reference_vocab}")
        width = max(len(c.name) for c in self.checks)
        for check in self.checks:
            mark = "PASS" if check.passed else "FAIL"
            need = f"  (needs {check.requirement})" if check.requirement else ""
            lines.append(f"  {mark}  {check.name:{width}}  {check.value}{need}")
        lines += [f"  note: {note}" for note in self.info]
        if not self.original_available:
            lines.append(
                f"  {original_problem() or 'cn_clip was left out'}: outputs were not compared with the original "
                "model (to do so: pip install --no-deps cn_clip==1.6.0, then pip install six torchvision)."
            )
        lines.append("Verified: all checks pass." if self.ok else "Verification FAILED.")
        return "\n".join(lines)


def verify_folder(
    checkpoint: str | Path,
    folder: str | Path,
    *,
    captions: list[str] | None = None,
    images: list | None = None,
    use_original: bool = True,
    vocab: str | Path | None = None,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    config: str | Path | ChineseCLIPConfig | None = None,
) -> VerifyReport:
    """Check ``folder`` (a converted ``ChineseCLIPModel``) against the original ``checkpoint``.

    Args:
        captions, images: inputs for the token and output comparisons (default: five Chinese captions and
            a photograph shipped with the package).
        use_original: compare outputs with cn_clip when it is installed.
        vocab: the reference vocabulary (default: ``vocab.txt`` beside the checkpoint, else cn_clip's); the
            folder's own is what is checked, never the reference.
        vision_heads, text_heads, config: the options the folder was converted with, if any. Head counts
            are invisible in the weights, so they are never taken from the folder's own record; a note names
            what it records.

    Returns:
        A :class:`VerifyReport`; ``report.ok`` says whether every check passed. It raises only for
        unreadable input (a :class:`ConversionError`), never for a failed check.
    """
    quiet_transformers()
    checkpoint, folder = Path(checkpoint), Path(folder)
    tensors = _check_tensors(
        checkpoint, folder, {"vision_heads": vision_heads, "text_heads": text_heads, "config": config}
    )
    reference, origin = find_vocab(vocab, checkpoint)
    if reference is not None and reference.resolve().is_relative_to(folder.resolve()):
        reference, origin = None, f"none: {reference} lies in the folder under test, which cannot vouch for itself"
    report = VerifyReport(checkpoint, folder, use_original and has_original(), tensors.precision)
    report.reference_vocab = f"{reference} ({origin})" if reference else origin
    report.info += tensors.notes
    captions = captions or SAMPLE_CAPTIONS
    reload, model = _check_reload(folder)
    model = model if report.original_available else None  # kept only to run it
    report.checks += [
        tensors.weights,
        reload,
        _check_config(folder, tensors.plan.config, report.info),
        _check_preprocessor(folder, tensors.plan.architecture.image_size),
        *_check_tokenizer(folder, reference, captions, report.original_available, report.info),
        *tensors.round_trips,
        *tensors.provenance,
    ]
    if report.original_available:
        before = len(report.checks)
        if tensors.shapes_differ:  # the two models would not even compute outputs of the same shapes
            report.checks.append(Check("outputs compared", False, NOT_RUN, "cn_clip and the folder both run"))
        else:
            images = images or [sample_image()]
            _compare_outputs(report, reference, tensors.plan.architecture, captions, images, model)
        report.output_checks = report.checks[before:]
    return report


NOT_RUN = (
    "not run: the folder's weights do not match the checkpoint's architecture (their shapes differ: see "
    "'weights equal source')"
)


@dataclass
class _TensorFindings:
    plan: ConversionPlan
    precision: str
    notes: list[str]
    weights: Check
    round_trips: list[Check]
    provenance: list[Check]
    shapes_differ: bool  # some tensor of the folder has another shape than the checkpoint's implies


def _check_tensors(checkpoint: Path, folder: Path, given: dict) -> _TensorFindings:
    """The plan the folder should follow (``given``: the caller's head counts and config), and the checks
    that read every tensor: the folder's weights against the source's (one expected tensor at a time), both
    round trips and the digest. The tensors are held only here: released before any model is loaded."""
    source = load_checkpoint(checkpoint).state_dict
    written = load_folder_state(folder)
    options, notes = _conversion_options(folder, **given)
    plan = _plan(source, written, options, checkpoint)
    if is_flash_layout(source):
        notes.append(
            "the source is in the flash-attention layout, and reverse conversion writes the standard one: the "
            "round trip original → transformers → original is not applicable (the weights check covers it)."
        )
    # The digest reads every source byte once more: in a thread, beside the comparisons (both release the GIL).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chclip-verify-digest") as pool:
        provenance = pool.submit(_check_provenance, folder, source)
        comparison = compare_state(plan.tensors(source.__getitem__), written, buffers=REVERSE_IGNORED)
        notes += [f"{key} is not a weight: it {why}" for key, why in sorted(comparison.set_aside.items())]
        round_trips = _check_round_trips(source, written, folder)
        findings = (_check_weights(comparison), round_trips, provenance.result(), bool(comparison.of_kind(SHAPE)))
        return _TensorFindings(plan, _precision(plan, source), notes, *findings)


def _conversion_options(folder: Path, vision_heads, text_heads, config) -> tuple[dict, list[str]]:
    """The options to expect, and notes. Head counts and a config come only from the caller: they are
    invisible in the weights, so the folder under test cannot vouch for them. The dtype, which the tensors
    show anyway, is taken as the folder records it."""
    try:
        recorded = read_overrides(folder)
    except ConversionError:  # named by the provenance check, which reads the same file
        recorded = None
    notes = []
    if recorded is None:
        recorded = {}
        notes.append(
            "the folder records no readable conversion options (conversion_report.json): the dtype is expected "
            "as its tensors show it."
        )
    for name, given in (("vision_heads", vision_heads), ("text_heads", text_heads), ("config", config)):
        value = recorded.get(name)
        if value is not None and (given is None or (name != "config" and value != given)):
            flag = f"--{name.replace('_', '-')}"
            notes.append(
                f"the folder records {flag} given at conversion; head counts are invisible in the weights, so "
                f"verify expects the checkpoint's own architecture unless it is given the same {flag} "
                f"(recorded: {str(recorded[name])[:80]})."
            )
    dtype = recorded.get("dtype")
    options = {
        "config": load_config(config) if isinstance(config, str | Path) else config,
        "vision_heads": vision_heads,
        "text_heads": text_heads,
        "dtype": dtype if dtype in DTYPE_CHOICES else None,
    }
    return options, notes


def _plan(source: dict, written: dict, options: dict, checkpoint: Path) -> ConversionPlan:
    """The conversion the folder should be: as recorded, or with the dtype most of its tensors show."""
    options = dict(options)
    dtype = options.pop("dtype", None)
    plan = plan_conversion(source, dtype=dtype or "auto", strict=False, path=checkpoint, **options)
    if dtype is not None:
        return plan
    specs = {name: written_dtype for name, _, written_dtype in plan.target_specs(source)}
    if all(written[name].dtype == specs[name] for name in specs if name in written):
        return plan
    most = majority_dtype(TensorSpec(name, tuple(tensor.shape), tensor.dtype) for name, tensor in written.items())
    if dtype_name(most) not in DTYPES:
        return plan
    return plan_conversion(source, dtype=dtype_name(most), strict=False, path=checkpoint, **options)


def _precision(plan: ConversionPlan, source: dict[str, torch.Tensor]) -> str:
    """``exact`` when the folder's values are the source's (or widened to float32), else the 16-bit cast."""
    if plan.cast in (None, torch.float32) or all(tensor.dtype == plan.cast for tensor in source.values()):
        return "exact"
    return dtype_name(plan.cast)


def _check_weights(comparison: FolderComparison) -> Check:
    requirement = "every key both ways; same shape, dtype, bytes"
    return Check("weights equal source", comparison.ok, comparison.describe(), requirement, keys=comparison.keys)


def _check_provenance(folder: Path, source: dict[str, torch.Tensor]) -> list[Check]:
    """The source weights digest the folder records, recomputed from the checkpoint's tensors; no check
    for a folder that records none (converted elsewhere, or by an older version)."""
    name, requirement = "source weights digest", "the one recorded in conversion_report.json"
    try:
        report = read_report(folder) or {}
    except ConversionError as error:
        return [Check(name, False, _one_line(error.message), requirement, fields=[REPORT_FILE])]
    recorded, algorithm = report.get("source_weights_digest"), recorded_algorithm(report)
    if recorded is None:
        return []
    if algorithm not in KNOWN_ALGORITHMS:
        value = f"{algorithm!r}, which this version cannot recompute (a newer chclip-convert's?)"
        return [Check(name, False, value, requirement, fields=[f"{REPORT_FILE}: source_weights_digest_algorithm"])]
    actual = weights_digest(source, algorithm)
    if actual == recorded:
        return [Check(name, True, f"{actual[:16]}… as recorded", requirement)]
    field_name = f"{REPORT_FILE}: source_weights_digest"
    value = f"{field_name}: folder {recorded}, the checkpoint's {actual} (converted from another file?)"
    return [Check(name, False, value, requirement, fields=[field_name])]


def _check_reload(folder: Path) -> tuple[Check, ChineseCLIPModel | None]:
    """The strict reload, and the model it loaded (in float32, ready to run) when every key matched."""
    from transformers import ChineseCLIPModel

    name, requirement = "folder reloads", "no missing, unexpected or mismatched key"
    try:
        model, info = ChineseCLIPModel.from_pretrained(
            folder, output_loading_info=True, ignore_mismatched_sizes=True, dtype=torch.float32
        )
    except Exception as error:  # any failure to load is the finding itself
        return Check(name, False, _one_line(f"{type(error).__name__}: {error}"), requirement), None
    found = {
        "missing": sorted(info["missing_keys"]),
        "unexpected": sorted(info["unexpected_keys"]),
        "mismatched": sorted(f"{key} {list(got)} (model {list(want)})" for key, got, want in info["mismatched_keys"]),
    }
    keys = sorted({*found["missing"], *found["unexpected"], *(k for k, _, _ in info["mismatched_keys"])})
    if keys or info["error_msgs"]:
        listed = [f"{kind} ({len(items)}): {_first(items)}" for kind, items in found.items() if items]
        value = "transformers reports " + "; ".join(listed + [_one_line(m) for m in info["error_msgs"]])
        return Check(name, False, value, requirement, keys=keys), None
    try:
        loaded = ["model", *_load_preprocessing(folder)]
    except Exception as error:
        return Check(name, False, _one_line(f"processor: {type(error).__name__}: {error}"), requirement), None
    return Check(name, True, f"{' and '.join(loaded)} load offline, every key matched", requirement), model


def _load_preprocessing(folder: Path) -> list[str]:
    """Load the folder's tokenizer and, where an image backend is installed, its image processor; say which.

    Without Pillow or torchvision (the package alone), transformers cannot build any image processor: the
    settings in ``preprocessor_config.json`` are still checked field by field.
    """
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.utils import is_torchvision_available, is_vision_available

    loaded = []
    if (folder / TOKENIZER_CONFIG_FILE).is_file():
        AutoTokenizer.from_pretrained(folder)
        loaded.append("tokenizer")
    if is_vision_available() or is_torchvision_available():
        AutoImageProcessor.from_pretrained(folder)
        loaded.append("image processor")
    return loaded


def _check_config(folder: Path, expected: ChineseCLIPConfig, notes: list[str]) -> Check:
    """Every field that shapes the model as the checkpoint implies; fields that shape nothing go to ``notes``."""
    name, requirement = "config.json matches the checkpoint", "every field that shapes the model as implied"
    try:
        written = read_json(folder, CONFIG_FILE)
    except ConversionError as error:
        return Check(name, False, error.message, requirement, fields=[CONFIG_FILE])
    if written is None:
        return Check(name, False, f"{CONFIG_FILE} is absent", requirement, fields=[CONFIG_FILE])
    found = compare_config(written, expected)
    passed = "every field as implied (architectures included)"
    return _fields_check(CONFIG_FILE, Check(name, True, passed, requirement), found, notes)


def _fields_check(file: str, passed: Check, found: list[FieldDifference], notes: list[str]) -> Check:
    """``passed`` unless some of ``file``'s differences carry no note: then failing, naming them. The noted
    differences, grouped by their note, go to ``notes``."""
    failing = [difference for difference in found if difference.fails]
    grouped: dict[str, list[str]] = {}
    for difference in found:
        if not difference.fails:
            grouped.setdefault(difference.note, []).append(str(difference))
    notes += [f"{file}: {_first(items)} ({note})" for note, items in grouped.items()]
    if not failing:
        return passed
    value = _first([str(d) for d in failing])
    return Check(passed.name, False, value, passed.requirement, fields=[d.field for d in failing])


def _check_preprocessor(folder: Path, image_size: int) -> Check:
    name, requirement = "preprocessor_config.json matches cn_clip", "cn_clip's image_transform"
    try:
        found = compare_preprocessor(read_json(folder, PREPROCESSOR_FILE), image_size)
    except ConversionError as error:
        return Check(name, False, error.message, requirement, fields=[PREPROCESSOR_FILE])
    value = _first([str(d) for d in found]) if found else f"square bicubic {image_size} px, no crop, OpenAI mean/std"
    return Check(name, not found, value, requirement, fields=[d.field for d in found])


def _check_tokenizer(
    folder: Path, reference: Path | None, captions: list[str], original: bool, notes: list[str]
) -> list[Check]:
    if reference is None:
        why = (
            "no reference vocabulary: pass --vocab (the vocab.txt the model was trained with), put vocab.txt "
            "beside the checkpoint, or install cn_clip"
        )
        return [Check("tokenizer equals reference", False, why, "a reference vocabulary")]
    reference_tokens = vocab_tokens(reference)
    vocabularies = folder_vocabularies(folder)
    checks = {file: _check_vocabulary(file, tokens, reference_tokens) for file, tokens in vocabularies.items()}
    if vocabularies[TOKENIZER_FILE] == ABSENT and checks[VOCAB_FILE].passed:
        checks[TOKENIZER_FILE] = _slow_tokenizer_alone(notes)
    return [
        *checks.values(),
        _check_tokenizer_config(folder, notes),
        _check_token_ids(folder, reference, [*captions, *TOKENIZER_PROBES], original),
    ]


def _check_vocabulary(file: str, tokens: list[str | None] | str, reference_tokens: list[str]) -> Check:
    """One of the folder's vocabularies entry by entry (``tokens``: why it cannot be read, if a string)."""
    name = f"{file} equals reference"
    if isinstance(tokens, str):
        return Check(name, False, f"{file} is {tokens}", "every entry", fields=[file])
    found = compare_vocab(tokens, reference_tokens)
    listed = _first([str(d) for d in found])
    value = f"{len(found)} entries differ: {listed}" if found else f"{len(reference_tokens)} entries equal"
    return Check(name, not found, value, "every entry", [f"{file} id {d.id}" for d in found[:100]])


def _slow_tokenizer_alone(notes: list[str]) -> Check:
    """An absent ``tokenizer.json`` beside a ``vocab.txt`` that equals the reference passes, with a note:
    transformers then builds the tokenizer from ``vocab.txt``, as in the folders transformers 4.2x wrote."""
    notes.append(
        f"the folder has no {TOKENIZER_FILE}: transformers builds its tokenizer from {VOCAB_FILE}, which equals "
        "the reference entry by entry (the token ids check compares what that tokenizer gives)."
    )
    value = f"absent; {VOCAB_FILE} equals the reference and stands for it"
    return Check(f"{TOKENIZER_FILE} equals reference", True, value, "every entry")


def _check_tokenizer_config(folder: Path, notes: list[str]) -> Check:
    name, requirement = "tokenizer_config.json matches the reference", "cn_clip's tokenizer settings"
    try:
        found = compare_tokenizer_config(read_json(folder, TOKENIZER_CONFIG_FILE))
    except ConversionError as error:
        return Check(name, False, _one_line(error.message), requirement, fields=[TOKENIZER_CONFIG_FILE])
    settled = "lower-casing, Chinese characters split" + ("" if found else ", length 52")
    return _fields_check(TOKENIZER_CONFIG_FILE, Check(name, True, settled, requirement), found, notes)


def _check_token_ids(folder: Path, reference: Path, captions: list[str], original: bool) -> Check:
    name = "token ids equal"
    requirement = "cn_clip's tokenizer" if original else "BertTokenizer over the reference vocabulary"
    try:
        folder_ids = folder_token_ids(folder, captions)
    except Exception as error:  # a tokenizer that does not load is the finding itself
        return Check(name, False, _one_line(f"the folder's tokenizer: {type(error).__name__}: {error}"), requirement)
    found = compare_ids(folder_ids, reference_token_ids(reference, captions, use_original=original), captions)
    value = _first(found) if found else f"{len(captions)} captions, identical ids"
    return Check(name, not found, value, f"ids of {requirement}")


def _check_round_trips(source: dict[str, torch.Tensor], written: dict[str, torch.Tensor], folder: Path) -> list[Check]:
    name = "round trip transformers → original → transformers"
    try:
        original = reverse_state_dict(written, path=folder)
    except ConversionError as error:
        keys = error.report.problems() if getattr(error, "report", None) else {}
        return [Check(name, False, _one_line(error.message), keys=sorted(k for v in keys.values() for k in v))]
    again, _ = map_tensors(original, {key: tuple(t.shape) for key, t in written.items()})
    back = compare_state(again, written, buffers=REVERSE_IGNORED)
    checks = [Check(name, back.ok, "bit-exact" if back.ok else back.describe(), keys=back.keys)]
    name = "round trip original → transformers → original"
    if is_flash_layout(source):  # a flash source comes back in the standard layout: see the note in verify
        return checks
    comparable = {
        key: tensor.to(original[key].dtype) if key in original else tensor
        for key, tensor in source.items()
        if key not in IGNORED
    }
    there = compare_state(comparable, original)
    checks.append(Check(name, there.ok, "bit-exact (pooler aside)" if there.ok else there.describe(), keys=there.keys))
    return checks


def _compare_outputs(
    report: VerifyReport,
    reference: Path | None,
    architecture: Architecture,
    captions: list[str],
    images: list,
    model: ChineseCLIPModel | None,
) -> None:
    """Both models on the same inputs; ``model`` is the folder's, as the reload check loaded it (``None``: load
    it here, where a folder that does not run is named)."""
    folder = report.folder
    if reference is None or not (folder / TOKENIZER_CONFIG_FILE).is_file():
        why = "no reference vocabulary (pass --vocab)" if reference is None else "the folder has no tokenizer"
        report.checks.append(Check("outputs compared", False, why, "cn_clip and the folder both run"))
        return
    original = run_original(report.checkpoint, reference, images, captions, architecture=architecture)
    try:
        converted = run_converted(folder, images, captions, model=model)
    except Exception as error:  # a folder that does not run is the finding itself
        why = _one_line(f"the folder does not run: {type(error).__name__}: {error}")
        report.checks.append(Check("outputs compared", False, why))
        return
    report.original_outputs, report.converted_outputs = original, converted
    found = report.details = differences(original, converted)
    limits = TOLERANCES[report.precision]
    pixel, relative_limit, cosine_limit = found["pixel max abs diff"], limits["relative"], limits["cosine"]
    checks = [Check("pixel max abs diff", pixel <= PIXEL_TOLERANCE, f"{pixel:.2e}", f"≤ {PIXEL_TOLERANCE:.0e}")]
    for kind, measured, reference in (
        ("image", "image feature max abs diff", original.image_features),
        ("text", "text feature max abs diff", original.text_features),
        ("logits", "logits max abs diff", original.logits_per_image),
    ):
        absolute = found[measured]
        relative = absolute / max(reference.float().abs().max().item(), 1e-12)
        value, need = f"{absolute:.2e} ({relative:.2e})", f"relative ≤ {relative_limit:.0e}"
        checks.append(Check(f"{kind} max abs diff (relative)", relative <= relative_limit, value, need))
    for kind in ("image", "text"):
        cosine = found[f"{kind} feature min cosine"]
        checks.append(Check(f"{kind} feature min cosine", cosine >= cosine_limit, f"{cosine:.7f}", f"≥ {cosine_limit}"))
    agrees = bool(found["top-1 agrees"])
    report.checks += [*checks, Check("top-1 agrees", agrees, str(agrees), "True")]
    try:
        report.info.append(_default_backend_note(folder, images, original.pixel_values))
    except Exception as error:  # the note is advisory; a processor that does not load already failed above
        report.info.append(f"the default image processor does not load: {type(error).__name__}")


def _first(items: list[str]) -> str:
    more = f" … and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return "; ".join(items[:SHOWN]) + more


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


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

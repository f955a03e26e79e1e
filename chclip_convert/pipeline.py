"""``convert_checkpoint``: a checkpoint file in, a complete transformers folder out.

Order matters for the user's safety: the output path is checked first, the conversion is planned and
checked from the tensors' metadata before anything is read or written, and the folder is written beside
the target and renamed into place only when complete and checked.

Order matters for speed too: what the output does not need is not read, and what only transformers knows
— the config, the meta-device ``ChineseCLIPModel``'s names and shapes, the tokenizer — is imported and
checked in a thread beside the weights instead of in front of them (its import takes seconds). A problem
it finds stops the writing, and nothing reaches the target.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from huggingface_hub.serialization._base import parse_size_to_int

from . import assets
from .architecture import Architecture
from .checkpoint import SourceCheckpoint, load_checkpoint
from .convert import ConversionPlan, confirm_plan, dtype_name, plan_conversion, plan_from_table
from .errors import ConversionError
from .folder import REPORT_FILE
from .output import atomic_output_dir, check_output_dir
from .provenance import ALGORITHM, CHECK_COMMAND, file_sha256_beside
from .report import ConversionReport
from .safetensors_writer import TensorSpec, spec_nbytes, write_weights
from .tensor_checks import TensorChecks

if TYPE_CHECKING:
    from transformers import ChineseCLIPConfig

NO_VOCAB_WARNING = (
    "no vocabulary found, so no tokenizer files were written: ChineseCLIPProcessor will not load from this "
    "folder. Re-run with --vocab path/to/vocab.txt (cn_clip's clip/vocab.txt), put vocab.txt beside the "
    "checkpoint, or install cn_clip."
)

ProgressCallback = Callable[[int, int], None]  # (bytes written so far, total bytes)


@dataclass
class ConversionSummary:
    """What a conversion read, found and wrote."""

    output_dir: Path
    source: Path
    source_weights_digest: str  # see chclip_convert.provenance
    source_sha256: str | None  # of the whole file, only when asked for (file_sha256=True, --sha256)
    wrapper: str
    architecture: Architecture
    report: ConversionReport
    parameter_count: int
    config_dtype: str
    dtypes_written: dict[str, int]
    files: list[str]
    vocabulary: str
    seconds: float
    warnings: list[str] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)  # options that shape the folder, read back by verify

    def to_text(self) -> str:
        dtypes = ", ".join(f"{name} ({count} tensors)" for name, count in sorted(self.dtypes_written.items()))
        lines = [
            f"Converted {self.source.name} → {self.output_dir}",
            f"  architecture: {self.architecture.description}",
            f"  source:       {self.wrapper}, weights digest {self.source_weights_digest[:16]}…"
            + (f", file sha256 {self.source_sha256[:16]}…" if self.source_sha256 else ""),
            f"  parameters:   {self.parameter_count:,}",
            f"  dtype:        config {self.config_dtype}; written {dtypes}",
            f"  report:       {self.report.summary()}",
            f"  tokenizer:    {self.vocabulary}",
            f"  files:        {', '.join(self.files)}",
            f"  time:         {self.seconds:.1f} s",
        ]
        lines += [f"  note: {note}" for note in self.report.notes]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "output_dir": str(self.output_dir),
            "source": str(self.source),
            "source_weights_digest": self.source_weights_digest,
            "source_weights_digest_algorithm": ALGORITHM,
            "source_sha256": self.source_sha256,
            "wrapper": self.wrapper,
            "architecture": self.architecture.to_dict(),
            "parameter_count": self.parameter_count,
            "config_dtype": self.config_dtype,
            "dtypes_written": self.dtypes_written,
            "files": self.files,
            "vocabulary": self.vocabulary,
            "seconds": self.seconds,
            "warnings": self.warnings,
            "overrides": self.overrides,
            "report": self.report.to_dict(),
        }


def load_config(path: str | Path) -> ChineseCLIPConfig:
    """Read a user's ``config.json`` (or a folder holding one) as a ``ChineseCLIPConfig``."""
    from transformers import ChineseCLIPConfig

    path = Path(path).expanduser()
    file = path / "config.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConversionError("config file not found.", path=file) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"config file is not valid JSON ({error}).", path=file) from error
    if data.get("model_type", "chinese_clip") != "chinese_clip":
        raise ConversionError(f"config is for model_type {data['model_type']!r}, not 'chinese_clip'.", path=file)
    return ChineseCLIPConfig.from_dict(data)


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    *,
    dtype: str = "auto",
    vocab: str | Path | None = None,
    config: str | Path | ChineseCLIPConfig | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = "5GB",
    vision_heads: int | None = None,
    text_heads: int | None = None,
    strict: bool = True,
    progress: ProgressCallback | None = None,
    file_sha256: bool = False,
) -> ConversionSummary:
    """Convert an original Chinese-CLIP checkpoint into a folder ``ChineseCLIPModel`` loads offline.

    Args:
        checkpoint: a ``.pt`` training checkpoint or bare state dict (never modified).
        output_dir: the folder to create; refused if it exists and is not empty, unless ``overwrite``.
        dtype: ``"auto"`` (keep every tensor's dtype) or ``"float32"``/``"float16"``/``"bfloat16"``.
        vocab: a ``vocab.txt``; by default one beside the checkpoint, else cn_clip's when installed.
        config: an optional ``config.json`` path or config, checked against the weights.
        max_shard_size: weights above this size are split into shards with an index: ``"5GB"``, ``"500MB"``
            (units KB, MB, GB, TB) or an int of bytes.
        vision_heads, text_heads: head counts, if the known-model values do not apply.
        strict: with ``False``, unused source keys are dropped (and reported) instead of stopping.
        progress: called as ``progress(bytes_written, total_bytes)`` while the weights are written.
        file_sha256: also hash the whole file (optimizer state included), beside the conversion. The folder
            always records the digest of the weights read (see :mod:`chclip_convert.provenance`), which
            costs no extra read; the file's SHA-256 reads every byte, and is off by default.

    Returns:
        A :class:`ConversionSummary`.

    Raises:
        ConversionError: (a subclass) for any problem with the input or the output; nothing is written.

    Example:
        >>> summary = convert_checkpoint("epoch_latest.pt", "chinese-clip-hf")  # doctest: +SKIP
        >>> print(summary.to_text())  # doctest: +SKIP
    """
    started = time.perf_counter()
    output_dir = check_output_dir(output_dir, input_path=checkpoint, overwrite=overwrite)
    max_shard_bytes = _shard_bytes(max_shard_size)
    user_config = load_config(config) if isinstance(config, str | Path) else config
    with contextlib.ExitStack() as stack:  # the file's hash, if asked for, runs beside and ends with the rest
        sha256 = stack.enter_context(file_sha256_beside(Path(checkpoint))) if file_sha256 else None
        source = load_checkpoint(checkpoint)
        options = {"dtype": dtype, "strict": strict, "vision_heads": vision_heads, "text_heads": text_heads}
        if user_config is None:  # transformers not needed yet: the model's check runs beside the weights
            plan = plan_from_table(source.state_dict, path=source.path, **options)
        else:  # transformers was imported to read the config anyway
            plan = plan_conversion(source.state_dict, config=user_config, path=source.path, **options)
        vocab_path, vocabulary, summary_warnings = _choose_vocab(vocab, source.path, plan.architecture.vocab_size)
        specs = plan.target_specs(source.state_dict)
        with atomic_output_dir(output_dir, overwrite=overwrite) as folder:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chclip-model-side") as pool:
                side = pool.submit(_model_side, folder, plan, source, strict, vocab_path)
                streamed = _stream_weights(folder, plan, source, specs, max_shard_bytes, progress, side)
                plan, side_files = side.result()
            summary = ConversionSummary(
                output_dir=output_dir,
                source=source.path,
                source_weights_digest=streamed.digest,
                source_sha256=sha256() if sha256 else None,
                wrapper=source.wrapper + (" with module. prefix" if source.had_module_prefix else ""),
                architecture=plan.architecture,
                report=plan.report,
                parameter_count=sum(math.prod(shape) for _, shape, _ in specs),
                config_dtype=str(plan.config.dtype),
                dtypes_written=dict(Counter(dtype_name(dtype) for _, _, dtype in specs)),
                files=streamed.files + side_files,
                vocabulary=vocabulary,
                seconds=0.0,
                warnings=summary_warnings + _non_finite_warning(streamed.non_finite),
                overrides=conversion_overrides(dtype, vision_heads, text_heads, user_config),
            )
            _write_card_and_report(folder, summary, source.skipped, started)
    for warning in summary.warnings:
        warnings.warn(warning, stacklevel=2)
    return summary


def _shard_bytes(max_shard_size: int | str) -> int:
    """``max_shard_size`` in bytes: an int as it is, a string in huggingface_hub's units (``"5GB"``, ``"500MB"``)."""
    try:  # OverflowError: "infGB"
        size = max_shard_size if isinstance(max_shard_size, int) else parse_size_to_int(max_shard_size)
    except (ValueError, OverflowError) as error:
        raise ConversionError(f"--max-shard-size: {error}") from error
    if size <= 0:
        raise ConversionError(
            f"--max-shard-size: {max_shard_size!r} is not a positive size; write it like 5GB or 500MB."
        )
    return size


def conversion_overrides(
    dtype: str, vision_heads: int | None, text_heads: int | None, config: ChineseCLIPConfig | None
) -> dict:
    """What a conversion was told beyond the checkpoint, recorded in the folder. Verification expects the
    recorded dtype; head counts and a config it takes only from its own options (the folder cannot vouch for
    what the weights do not show), and names what the folder records."""
    return {
        "dtype": dtype,
        "vision_heads": vision_heads,
        "text_heads": text_heads,
        "config": json.loads(config.to_json_string()) if config is not None else None,
    }


def _non_finite_warning(keys: list[str]) -> list[str]:
    if not keys:
        return []
    return [
        f"{len(keys)} tensor(s) hold NaN or Inf values: {', '.join(keys)}. They were converted as they are, "
        "and the model will give NaN outputs; check the training run that wrote them."
    ]


def _write_card_and_report(folder: Path, summary: ConversionSummary, skipped: list[str], started: float) -> None:
    """The model card and ``conversion_report.json``, the last files written; sets the summary's files and time."""
    notes = summary.report.notes + summary.warnings
    provenance = assets.provenance_section(summary.source.name, summary.source_sha256 is not None, CHECK_COMMAND)
    facts = _card_facts(summary, skipped)
    card = assets.write_model_card(folder, facts, summary.report.summary(), notes, provenance)
    summary.files = sorted([*summary.files, *card, REPORT_FILE])
    summary.seconds = time.perf_counter() - started
    report_text = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n"
    (folder / REPORT_FILE).write_text(report_text, encoding="utf-8")


def _choose_vocab(vocab: str | Path | None, checkpoint: Path, vocab_size: int) -> tuple[Path | None, str, list[str]]:
    """The vocabulary to write a tokenizer from, a description of it, and warnings.

    A vocabulary the user named must fit the model; one found on its own that does not fit is skipped.
    """
    path, origin = assets.find_vocab(vocab, checkpoint)
    if path is None:
        return None, "not written (no vocabulary)", [NO_VOCAB_WARNING]
    mismatch = assets.vocab_mismatch(path, vocab_size)
    if mismatch and origin == "given":
        raise ConversionError(mismatch, path=path)
    if mismatch:
        return (
            None,
            "not written (no fitting vocabulary)",
            [f"{path} ({origin}) not used: {mismatch} No tokenizer was written."],
        )
    return path, f"{path} ({origin})", []


@dataclass
class Streamed:
    """What streaming the weights gave: the files written, the weights digest, tensors with NaN or Inf."""

    files: list[str]
    digest: str
    non_finite: list[str]


def _stream_weights(
    folder: Path,
    plan: ConversionPlan,
    source: SourceCheckpoint,
    specs: list[TensorSpec],
    max_shard_bytes: int,
    progress: ProgressCallback | None,
    side: Future,
) -> Streamed:
    """Write the weights, each source tensor read once, checked and digested beside, then released.

    Stops at the next tensor once ``side`` (the model's check) has failed.
    """
    total = sum(spec_nbytes(spec) for spec in specs)
    written = 0

    def advance(nbytes: int) -> None:
        nonlocal written
        written += nbytes
        if progress is not None:
            progress(written, total)

    with TensorChecks(source.state_dict) as checks:

        def load(key: str) -> torch.Tensor:
            if side.done() and side.exception() is not None:
                raise side.exception()
            tensor = source.read(key)
            checks.submit(key, tensor)
            return tensor

        files = write_weights(folder, specs, plan.tensors(load), max_shard_bytes=max_shard_bytes, progress=advance)
        for key in checks.not_submitted():  # covered by the table but dropped by the plan (--no-strict)
            checks.submit(key, source.read(key))
        digest, non_finite = checks.results()
    return Streamed(files, digest, non_finite)


def _model_side(
    folder: Path, plan: ConversionPlan, source: SourceCheckpoint, strict: bool, vocab_path: Path | None
) -> tuple[ConversionPlan, list[str]]:
    """What needs transformers: confirm a table plan against ``ChineseCLIPModel``, then write the config,
    preprocessing and tokenizer files. Returns the confirmed plan and the files written."""
    if plan.config is None:
        plan = confirm_plan(plan, source.state_dict, strict=strict, path=source.path)
    plan.config.save_pretrained(folder)
    files = ["config.json", *assets.write_image_processor(folder, plan.architecture.image_size)]
    if vocab_path is not None:
        files += assets.write_tokenizer(folder, vocab_path, plan.architecture.vocab_size)
    return plan, files


def _card_facts(summary: ConversionSummary, skipped: list[str]) -> dict[str, str]:
    dtypes = ", ".join(f"{name} × {count}" for name, count in sorted(summary.dtypes_written.items()))
    return {
        "source file": f"`{summary.source.name}`",
        "source weights digest": f"`{summary.source_weights_digest}`",
        **({"source file SHA-256": f"`{summary.source_sha256}`"} if summary.source_sha256 else {}),
        "source layout": summary.wrapper + (f" (not read: {', '.join(skipped)})" if skipped else ""),
        "architecture": summary.architecture.description,
        "image size": f"{summary.architecture.image_size} px",
        "parameters": f"{summary.parameter_count:,}",
        "dtype": f"{summary.config_dtype} (tensors: {dtypes})",
    }

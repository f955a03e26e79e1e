"""``convert_checkpoint``: a checkpoint file in, a complete transformers folder out.

Order matters for the user's safety: the output path is checked first, the conversion is planned and
checked from the tensors' metadata before anything is read or written, and the folder is written beside
the target and renamed into place only when complete and checked.

Order matters for speed too: what the output does not need is not read, and nothing but reading stands in
front of the weights. The config, the preprocessing and the tokenizer files are written beside them, from the
table and with the ``tokenizers`` library, without importing transformers; the check against the meta-device
``ChineseCLIPModel`` (its import takes seconds) runs beside them too, and only once for the same targets
under the same transformers (:mod:`chclip_convert.conversion.model_check`). A problem it finds stops the
writing, and nothing reaches the target.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from chclip_convert.conversion.model_check import check_against_model
from chclip_convert.conversion.provenance import file_sha256_beside
from chclip_convert.conversion.state_dict import ConversionPlan, dtype_name, majority_dtype, plan_conversion
from chclip_convert.conversion.summary import CardOptions, ConversionSummary
from chclip_convert.conversion.tensor_checks import TensorChecks
from chclip_convert.files import assets
from chclip_convert.files.checkpoint import SourceCheckpoint, load_checkpoint
from chclip_convert.files.folder import load_config
from chclip_convert.files.output import atomic_output, check_output_dir, output_lock
from chclip_convert.files.safetensors_writer import TensorSpec, shard_size_bytes, spec_nbytes, write_weights
from chclip_convert.mapping.config_file import config_text
from chclip_convert.names import CARD_FILE, CONFIG_FILE, REPORT_FILE
from chclip_convert.progress import OnProgress, Progress
from chclip_convert.tensor_stats import one_thread

if TYPE_CHECKING:
    from transformers import ChineseCLIPConfig

READING = "reading the checkpoint and checking every key"  # the stages a conversion reports, after its start
FINISHING = "writing the config and tokenizer, checking the folder"  # the weights' stage is the writer's
SIDE_WAIT_ON_INTERRUPT = 15.0  # seconds: the side's files and model check take well under this (its import ~4 s)


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
    progress: OnProgress | None = None,
    file_sha256: bool = False,
    license: str | None = None,
    base_model: str | None = None,
    record_paths: bool = False,
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
        progress: called with a :class:`~chclip_convert.progress.Progress` as each stage begins (:data:`READING`,
            uncounted), after each tensor is written — the bytes written of all (stage ``"writing weights"``), and
            the tensors written as ``index`` of ``count`` — and once the weights are written (:data:`FINISHING`).
            An exception it raises (a cancel button's, say) stops the conversion, and nothing is left behind.
        file_sha256: also hash the whole file (optimizer state included), beside the conversion. The folder
            always records the digest of the weights read (see :mod:`chclip_convert.conversion.provenance`), which
            costs no extra read; the file's SHA-256 reads every byte, and is off by default.
        license, base_model: what the model card tells the Hub (see
            :class:`~chclip_convert.conversion.summary.CardOptions`).
        record_paths: record the checkpoint's and the folder's absolute paths in ``conversion_report.json``; by
            default it holds the folder's name and the checkpoint's path relative to the folder (or its name
            alone), so that a folder to share names nothing of this machine.

    Returns:
        A :class:`ConversionSummary`.

    Raises:
        ConversionError: (a subclass) for any problem with the input or the output; nothing is written.

    Example:
        >>> summary = convert_checkpoint("epoch_latest.pt", "chinese-clip-hf")  # doctest: +SKIP
        >>> print(summary.to_text())  # doctest: +SKIP
    """
    started = time.perf_counter()
    max_shard_bytes = shard_size_bytes(max_shard_size)
    user_config = load_config(config) if isinstance(config, str | Path) else config
    with contextlib.ExitStack() as stack:  # the file's hash, if asked for, runs beside and ends with the rest
        stack.enter_context(output_lock(output_dir))  # one writer, from this check to the rename
        output_dir = check_output_dir(output_dir, input_path=checkpoint, overwrite=overwrite)
        if progress is not None:
            progress(Progress.starting(READING))
        sha256 = stack.enter_context(file_sha256_beside(Path(checkpoint))) if file_sha256 else None
        source = load_checkpoint(checkpoint)
        options = {"dtype": dtype, "strict": strict, "vision_heads": vision_heads, "text_heads": text_heads}
        # Without a config, transformers is not needed yet: the model's check runs beside the weights.
        plan = plan_conversion(
            source.state_dict, config=user_config, path=source.path, defer_model_check=True, **options
        )
        vocab_path, vocabulary, vocab_warnings = assets.choose_vocab(vocab, source.path, plan.architecture.vocab_size)
        specs = plan.target_specs(source.state_dict)
        config_dtype = dtype_name(majority_dtype(specs))  # what config.json records, as a given config's has it
        with atomic_output(output_dir, overwrite=overwrite) as folder:
            pool, interrupted = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chclip-model-side"), False
            side = None
            try:
                side = pool.submit(_model_side, folder, plan, source, specs, config_dtype, strict, vocab_path)
                streamed = _stream_weights(folder, plan, source, specs, max_shard_bytes, progress, side)
                if progress is not None:
                    total = sum(spec_nbytes(spec) for spec in specs)
                    progress(Progress(total, total, "B", FINISHING))
                side_files = side.result()
            except KeyboardInterrupt:
                interrupted = True
                raise
            finally:
                # A failure waits for the side, so that nothing writes into the folder being removed; Ctrl-C
                # waits a bounded time (the side may be stopped inside an import, whose lock the interrupt left
                # held): long enough for its files, so that they do not outlive the folder's removal.
                if interrupted and side is not None:
                    wait([side], timeout=SIDE_WAIT_ON_INTERRUPT)
                pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
            summary = ConversionSummary(
                output_dir=output_dir,
                source=source.path,
                source_weights_digest=streamed.digest,
                source_sha256=sha256() if sha256 else None,
                wrapper=source.wrapper + (" with module. prefix" if source.had_module_prefix else ""),
                skipped=tuple(source.skipped),
                architecture=plan.architecture,
                report=plan.report,
                parameter_count=sum(math.prod(shape) for _, shape, _ in specs),
                config_dtype=config_dtype,
                dtypes_written=dict(Counter(dtype_name(dtype) for _, _, dtype in specs)),
                files=tuple(sorted([*streamed.files, *side_files, CARD_FILE, REPORT_FILE])),
                vocabulary=vocabulary,
                seconds=time.perf_counter() - started,
                warnings=tuple(vocab_warnings + _non_finite_warning(streamed.non_finite)),
                overrides=conversion_overrides(dtype, vision_heads, text_heads, user_config),
                training=source.metadata,
                card=CardOptions(license, base_model),
                record_paths=record_paths,
            )
            _write_card_and_report(folder, summary)
    for warning in summary.warnings:
        warnings.warn(warning, stacklevel=2)
    return summary


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


def _write_card_and_report(folder: Path, summary: ConversionSummary) -> None:
    """The model card and ``conversion_report.json``, the last files written."""
    (folder / CARD_FILE).write_text(summary.model_card(), encoding="utf-8")
    report_text = json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n"
    (folder / REPORT_FILE).write_text(report_text, encoding="utf-8")


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
    progress: OnProgress | None,
    side: Future,
) -> Streamed:
    """Write the weights, each source tensor read once, checked and digested beside, then released.

    Stops at the next tensor once ``side`` (the model's check) has failed.
    """
    # One torch thread: torch's idle OpenMP workers spin after each check and take the core the writing needs
    # (measured on 2 cores: 1.6 s less CPU, 0.5 s less wall for ViT-H-14).
    with one_thread(), TensorChecks(source.state_dict) as checks:

        def load(key: str) -> torch.Tensor:
            if side.done() and side.exception() is not None:
                raise side.exception()
            tensor = source.read(key)
            checks.submit(key, tensor)
            return tensor

        files = write_weights(folder, specs, plan.tensors(load), max_shard_bytes=max_shard_bytes, progress=progress)
        for key in checks.not_submitted():  # covered by the table but dropped by the plan (--no-strict)
            checks.submit(key, source.read(key))
        digest, non_finite = checks.results()
    return Streamed(files, digest, non_finite)


def _model_side(
    folder: Path,
    plan: ConversionPlan,
    source: SourceCheckpoint,
    specs: list[TensorSpec],
    config_dtype: str,
    strict: bool,
    vocab_path: Path | None,
) -> list[str]:
    """The folder's files beside the weights — config, preprocessing, tokenizer — and, for a table plan, its
    check against ``ChineseCLIPModel`` (:func:`check_against_model`). Returns the files written."""
    if plan.config is None:  # the table's plan: transformers is imported only for a check not made before
        (folder / CONFIG_FILE).write_text(config_text(plan.architecture, config_dtype), encoding="utf-8")
        check_against_model(plan, source.state_dict, specs, strict=strict, path=source.path)
    else:
        plan.config.save_pretrained(folder)
    files = [CONFIG_FILE, *assets.write_image_processor(folder, plan.architecture.image_size)]
    if vocab_path is not None:
        files += assets.write_tokenizer(folder, vocab_path, plan.architecture.vocab_size)
    return files

"""Pure conversion: an original state dict in, a transformers state dict and a report out.

Nothing here touches the disk. Tensors come out as views of the input wherever the op allows
(renames and q/k/v splits), so the written bytes are the source bytes unless a dtype change is asked for.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import ChineseCLIPConfig

from .architecture import Architecture, check_config, expected_shapes, infer_architecture
from .errors import ConversionError, MappingError
from .mapping import IGNORED, find_rule
from .report import (
    CONFLICT,
    FILLED,
    MAPPED,
    MISSING,
    SHAPE_MISMATCH,
    TRANSFORMED,
    UNUSED,
    ConversionReport,
    SourceRecord,
    TargetRecord,
)
from .report import IGNORED as IGNORED_STATUS

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPE_CHOICES = ("auto", *DTYPES)


@dataclass
class ConversionResult:
    """The converted tensors, the config that fits them, the architecture read and the report."""

    state_dict: dict[str, torch.Tensor]
    config: ChineseCLIPConfig
    architecture: Architecture
    report: ConversionReport
    non_finite: list[str] = field(default_factory=list)  # source keys holding NaN or Inf

    @property
    def dtypes_written(self) -> dict[str, int]:
        """dtype name → number of tensors of that dtype in the result."""
        return dict(Counter(dtype_name(t.dtype) for t in self.state_dict.values()))

    @property
    def parameter_count(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def convert_state_dict(
    state_dict: dict[str, torch.Tensor],
    *,
    config: ChineseCLIPConfig | None = None,
    dtype: str = "auto",
    strict: bool = True,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    path: str | Path | None = None,
) -> ConversionResult:
    """Convert an original Chinese-CLIP state dict (``module.`` prefix already stripped).

    Args:
        state_dict: original names to tensors, standard or flash-attention layout, any dtypes.
        config: a ``ChineseCLIPConfig`` to use instead of the inferred one; checked against the shapes.
        dtype: ``"auto"`` keeps every tensor's dtype; ``"float32"``, ``"float16"``, ``"bfloat16"`` cast all.
        strict: raise :class:`MappingError` on unused source keys (missing target keys, shape mismatches
            and conflicts always raise).
        vision_heads, text_heads: head counts, overriding the known-model values.
        path: the file the state dict came from, named in errors.

    Returns:
        A :class:`ConversionResult`. Its config records the dtype most parameters have.
    """
    if dtype not in DTYPE_CHOICES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}.")
    configured = (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) if config else None
    arch = infer_architecture(
        state_dict, vision_heads=vision_heads, text_heads=text_heads, config_heads=configured, path=path
    )
    config = _resolve_config(config, arch, state_dict, vision_heads, text_heads, path)
    expected = expected_shapes(config)
    converted, report = map_tensors(state_dict, expected)
    report.notes.extend(arch.notes)
    if not strict and report.problems()["unused"]:
        report.notes.append(f"{len(report.problems()['unused'])} unused source key(s) dropped (--no-strict).")
    _raise_on_problems(report, strict, path)
    if dtype != "auto":
        converted = {key: tensor.to(DTYPES[dtype]) for key, tensor in converted.items()}
    config.dtype = dtype_name(majority_dtype(converted))
    return ConversionResult(converted, config, arch, report, find_non_finite(state_dict))


def find_non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or Inf (meta tensors, which hold no values, are skipped)."""
    return sorted(
        key
        for key, tensor in state_dict.items()
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all())
    )


def _resolve_config(config, arch, state_dict, vision_heads, text_heads, path) -> ChineseCLIPConfig:
    if config is None:
        return arch.to_config()
    config = ChineseCLIPConfig.from_dict(config.to_dict())  # never modify the caller's object
    if vision_heads is not None:
        config.vision_config.num_attention_heads = vision_heads
    if text_heads is not None:
        config.text_config.num_attention_heads = text_heads
    shapes = {key: tuple(tensor.shape) for key, tensor in state_dict.items()}
    overridden = vision_heads is not None or text_heads is not None
    return check_config(config, arch, shapes, heads_overridden=overridden, path=path)


def map_tensors(
    state_dict: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Apply the mapping table to every key and compare with ``expected`` names and shapes."""
    report = ConversionReport()
    converted: dict[str, torch.Tensor] = {}
    filled_by: dict[str, tuple[str, str]] = {}
    target_records: dict[str, TargetRecord] = {}
    for key in sorted(state_dict):
        tensor = state_dict[key]
        shape, dtype = tuple(tensor.shape), dtype_name(tensor.dtype)
        if key in IGNORED:
            report.sources.append(SourceRecord(key, IGNORED_STATUS, shape, dtype, reason=IGNORED[key]))
            continue
        found = find_rule(key)
        if found is None or any(t not in expected for t in found[0].expand(found[1])[1]):
            report.sources.append(SourceRecord(key, UNUSED, shape, dtype, reason="no rule maps this name"))
            continue
        rule, index = found
        _, targets = rule.expand(index)
        try:
            outputs = rule.op.apply([tensor])
        except ValueError as error:
            outputs = None
            reason = str(error)
        status = TRANSFORMED if rule.op.transforms else MAPPED
        report.sources.append(SourceRecord(key, status, shape, dtype, targets, rule.op.name))
        for position, target in enumerate(targets):
            out = outputs[position] if outputs is not None else None
            out_shape = tuple(out.shape) if out is not None else rule.op.shapes([shape])[position]
            if target in filled_by:
                target_records[target] = TargetRecord(
                    target,
                    CONFLICT,
                    expected[target],
                    out_shape,
                    dtype,
                    f"{filled_by[target][0]} and {key}",
                    rule.op.name,
                )
                continue
            filled_by[target] = (key, rule.op.name)
            ok = out is not None and out_shape == expected[target]
            target_records[target] = TargetRecord(
                target,
                FILLED if ok else SHAPE_MISMATCH,
                expected[target],
                out_shape,
                dtype,
                key,
                rule.op.name,
            )
            if ok:
                converted[target] = out
            elif outputs is None:
                report.notes.append(f"{key}: {reason}")
    for target, shape in expected.items():
        if target not in target_records:
            target_records[target] = TargetRecord(target, MISSING, shape)
    report.targets = [target_records[key] for key in sorted(target_records)]
    return converted, report


def _raise_on_problems(report: ConversionReport, strict: bool, path) -> None:
    problems = report.problems()
    fatal = {status: keys for status, keys in problems.items() if keys and (strict or status != UNUSED)}
    if not fatal:
        return
    raise MappingError(
        "the checkpoint does not map cleanly onto ChineseCLIPModel; nothing was written.\n"
        + report.format_problems(statuses=tuple(fatal)),
        path=path,
        report=report,
    )


def majority_dtype(state_dict: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype that holds the most elements (what config.json records for a mixed checkpoint)."""
    elements: Counter[torch.dtype] = Counter()
    for tensor in state_dict.values():
        elements[tensor.dtype] += tensor.numel()
    return elements.most_common(1)[0][0] if elements else torch.float32

"""Pure conversion: an original state dict in, a transformers state dict and a report out.

Nothing here touches the disk. Tensors come out as views of the input wherever the op allows
(renames and q/k/v splits), so the written bytes are the source bytes unless a dtype change is asked for.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from chclip_convert.errors import ConversionError, MappingError
from chclip_convert.files.safetensors_writer import TensorSpec
from chclip_convert.mapping.architecture import Architecture, check_config, expected_shapes, infer_architecture
from chclip_convert.mapping.config_file import ARCHITECTURES
from chclip_convert.mapping.ops import IDENTITY, Op
from chclip_convert.mapping.report import (
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
from chclip_convert.mapping.report import IGNORED as IGNORED_STATUS
from chclip_convert.mapping.table import FLASH, IGNORED, find_reverse_rule, find_rule, standard_rules_by_layer
from chclip_convert.names import DTYPE_CHOICES

if TYPE_CHECKING:
    from transformers import ChineseCLIPConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
assert ("auto", *DTYPES) == DTYPE_CHOICES


@dataclass
class ConversionResult:
    """The converted tensors, the config that fits them, the architecture read and the report."""

    state_dict: dict[str, torch.Tensor]
    config: ChineseCLIPConfig
    architecture: Architecture
    report: ConversionReport
    non_finite: list[str] = field(default_factory=list)  # source keys holding NaN or Inf


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TensorLike(Protocol):
    """What planning needs of a tensor: its shape and dtype (a ``torch.Tensor``, a meta tensor, …)."""

    shape: torch.Size
    dtype: torch.dtype


@dataclass(frozen=True)
class Step:
    """Tensors ``inputs`` become tensors ``outputs`` through ``op``: forward, one source tensor into its
    targets; in reverse (:mod:`chclip_convert.conversion.reverse`), a folder's parts into one original tensor."""

    inputs: tuple[str, ...]
    op: Op
    outputs: tuple[str, ...]


@dataclass
class ConversionPlan:
    """Everything decided before any tensor data is read: steps, config, architecture, report, cast."""

    steps: list[Step]
    config: ChineseCLIPConfig | None  # None until confirm_plan, for a defer_model_check plan
    architecture: Architecture
    report: ConversionReport
    cast: torch.dtype | None  # None: keep every tensor's dtype

    def target_specs(self, sources: dict[str, TensorLike]) -> list[TensorSpec]:
        """Every target tensor's name, shape and dtype, in the order :meth:`tensors` yields them."""
        shapes = {record.key: record.expected_shape for record in self.report.targets}
        return [
            TensorSpec(target, tuple(shapes[target]), self.cast or sources[step.inputs[0]].dtype)
            for step in self.steps
            for target in step.outputs
        ]

    def tensors(self, load: Callable[[str], torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (target name, tensor), reading each source tensor once through ``load(source_key)``."""
        for target, tensor, _ in apply_steps(self.steps, load, cast=self.cast):
            yield target, tensor


def apply_steps(
    steps: Iterable[Step], load: Callable[[str], torch.Tensor], *, cast: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor, Step]]:
    """The table applied: ``(target, tensor, step)`` for every target of ``steps``, in order.

    Each source tensor is read once, through ``load(source_key)``, and released before the next. Conversion,
    verification, the inspector and the tests all derive target tensors here.

    Raises:
        ValueError: an op cannot apply to a source tensor's shape (only for steps from :func:`table_steps`;
            planned steps are checked against the shapes first).
    """
    for step in steps:
        outputs = step.op.apply([load(key) for key in step.inputs])
        for target, tensor in zip(step.outputs, outputs, strict=True):
            yield target, tensor.to(cast) if cast is not None else tensor, step


def table_steps(keys: Iterable[str]) -> list[Step]:
    """A step for every key the table has a rule for, in sorted order, shapes unchecked (to look inside
    checkpoints that do not convert; use :func:`plan_conversion` to convert)."""
    steps = []
    for key in sorted(keys):
        found = find_rule(key)
        if found is not None:
            rule, index = found
            steps.append(Step((key,), rule.op, rule.expand(index)[1]))
    return steps


def standard_layout_steps(keys: Iterable[str]) -> list[Step]:
    """A step per key, in sorted order, that gives the key's tensor(s) in the standard layout training saves.

    A flash-attention tensor goes through the table: its rule's transformers names are the ones a standard rule
    fills, so the fused vision ``attn.Wqkv`` becomes ``attn.in_proj`` (the same tensor), the fused text
    ``attention.self.Wqkv`` splits into ``query``, ``key`` and ``value``, and ``attention.self.out_proj``
    becomes ``attention.output.dense``. Every other key is kept as it is.
    """
    steps = []
    for key in sorted(keys):
        found = find_rule(key)
        if found is None or found[0].layout != FLASH:
            steps.append(Step((key,), IDENTITY, (key,)))
            continue
        rule, index = found
        targets = rule.expand(index)[1]
        standard = [find_reverse_rule(target) for target in targets]
        first, _ = standard[0]
        if all(found_rule == first for found_rule, _ in standard) and first.expand(index)[1] == targets:
            steps.append(Step((key,), IDENTITY, (first.expand(index)[0],)))  # one standard tensor, renamed
        else:  # one standard tensor per part, each a plain rename of its transformers name
            assert all(found_rule.op == IDENTITY for found_rule, _ in standard), key
            steps.append(Step((key,), rule.op, tuple(r.expand(i)[0] for r, i in standard)))
    return steps


def plan_conversion(
    state_dict: dict[str, TensorLike],
    *,
    config: ChineseCLIPConfig | None = None,
    dtype: str = "auto",
    strict: bool = True,
    vision_heads: int | None = None,
    text_heads: int | None = None,
    path: str | Path | None = None,
    defer_model_check: bool = False,
) -> ConversionPlan:
    """Decide the whole conversion from names, shapes and dtypes alone; raise before anything is read.

    Arguments as for :func:`convert_state_dict`, whose first half this is. With ``defer_model_check`` (and no
    ``config``), the targets are the table's for these tensors, without transformers: unused, missing and
    conflicting keys are still caught (a checkpoint with any of them is checked against the model at once,
    to list every problem); what only the model knows — a shape it refuses — waits for :func:`confirm_plan`,
    whose ``ChineseCLIPModel`` import takes seconds, so a caller can run it beside the writing.
    """
    if dtype not in DTYPE_CHOICES:
        raise ConversionError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}.")
    configured = (config.vision_config.num_attention_heads, config.text_config.num_attention_heads) if config else None
    arch = infer_architecture(
        state_dict, vision_heads=vision_heads, text_heads=text_heads, config_heads=configured, path=path
    )
    if defer_model_check and config is None:
        implied = implied_shapes(state_dict)
        if table_targets(arch) <= implied.keys():  # every tensor the table knows is there
            try:
                return _plan(state_dict, arch, None, implied, dtype, strict, path)
            except MappingError:
                pass  # a broken checkpoint: checked against the model below, to list every problem at once
    config = _resolve_config(config, arch, state_dict, vision_heads, text_heads, path)
    return _plan(state_dict, arch, config, expected_shapes(config), dtype, strict, path)


def table_targets(arch: Architecture) -> set[str]:
    """Every target name the table's rules fill for ``arch``: each layer of each tower, and the rest."""
    rules = standard_rules_by_layer(arch.vision_layers, arch.text_layers)
    return {target for rule, index in rules for target in rule.expand(index)[1]}


def confirm_plan(plan: ConversionPlan, state_dict: dict[str, TensorLike], *, strict: bool = True, path=None):
    """The full plan (config, report against the meta-device ``ChineseCLIPModel``) for a plan made with
    ``defer_model_check``; raises :class:`MappingError` as :func:`plan_conversion` would."""
    config = plan.architecture.to_config()
    dtype = "auto" if plan.cast is None else dtype_name(plan.cast)
    full = _plan(state_dict, plan.architecture, config, expected_shapes(config), dtype, strict, path)
    if full.steps != plan.steps:
        raise ConversionError(
            "the mapping table and transformers' ChineseCLIPModel disagree on this checkpoint's tensors, so "
            "nothing was written; please report it with the conversion report (chclip-convert --report).",
            path=path,
        )
    return full


def implied_shapes(state_dict: dict[str, TensorLike]) -> dict[str, tuple[int, ...]]:
    """Target name → shape, as the table's rules make them of the tensors present (ignored keys left out)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, tensor in state_dict.items():
        found = None if key in IGNORED else find_rule(key)
        if found is not None:
            rule, index = found
            shapes.update(zip(rule.expand(index)[1], rule.op.shapes([tuple(tensor.shape)]), strict=True))
    return shapes


def _plan(state_dict, arch, config, expected, dtype: str, strict: bool, path) -> ConversionPlan:
    steps, report = plan_steps(state_dict, expected)
    report.notes.extend(arch.notes)
    if not strict and report.problems()["unused"]:
        report.notes.append(f"{len(report.problems()['unused'])} unused source key(s) dropped (--no-strict).")
    _raise_on_problems(report, strict, path)
    plan = ConversionPlan(steps, config, arch, report, DTYPES.get(dtype))
    if config is not None:
        config.dtype = dtype_name(majority_dtype(plan.target_specs(state_dict)))
        config.architectures = list(ARCHITECTURES)  # as transformers' own save_pretrained records it
    return plan


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
    """Convert an original Chinese-CLIP state dict (``module.`` prefix already stripped), in memory.

    Args:
        state_dict: original names to tensors, standard or flash-attention layout, any dtypes.
        config: a ``ChineseCLIPConfig`` to use instead of the inferred one; checked against the shapes.
        dtype: ``"auto"`` keeps every tensor's dtype; ``"float32"``, ``"float16"``, ``"bfloat16"`` cast all.
        strict: raise :class:`MappingError` on unused source keys (missing target keys, shape mismatches
            and conflicts always raise).
        vision_heads, text_heads: head counts, overriding the known-model values.
        path: the file the state dict came from, named in errors.

    Returns:
        A :class:`ConversionResult`. Its config records the dtype most parameters have. Renamed and split
        tensors are views of the input; :func:`chclip_convert.convert_checkpoint` streams instead.
    """
    plan = plan_conversion(
        state_dict, config=config, dtype=dtype, strict=strict, vision_heads=vision_heads, text_heads=text_heads,
        path=path,
    )  # fmt: skip
    converted = dict(plan.tensors(state_dict.__getitem__))
    return ConversionResult(converted, plan.config, plan.architecture, plan.report, find_non_finite(state_dict))


def find_non_finite(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or Inf (meta tensors, which hold no values, are skipped)."""
    return sorted(key for key, tensor in state_dict.items() if not is_finite(tensor))


def is_finite(tensor: torch.Tensor) -> bool:
    """False only for a floating-point tensor with values that holds a NaN or an Inf.

    One ``aminmax`` pass: a NaN anywhere makes both ends NaN, an Inf is an end itself.
    """
    if not tensor.is_floating_point() or tensor.device.type == "meta" or tensor.numel() == 0:
        return True
    low, high = torch.aminmax(tensor.reshape(-1))
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def _resolve_config(config, arch, state_dict, vision_heads, text_heads, path) -> ChineseCLIPConfig:
    if config is None:
        return arch.to_config()
    config = type(config).from_dict(config.to_dict())  # never modify the caller's object
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
    """Apply the mapping table to every key; return the tensors that fit ``expected`` and the report."""
    steps, report = plan_steps(state_dict, expected)
    return {target: tensor for target, tensor, _ in apply_steps(steps, state_dict.__getitem__)}, report


def plan_steps(
    state_dict: dict[str, TensorLike], expected: dict[str, tuple[int, ...]]
) -> tuple[list[Step], ConversionReport]:
    """Match every key against the table and ``expected`` names and shapes, from shapes alone.

    Returns the steps whose every target fits (in source-key order) and the report of all keys.
    """
    report = ConversionReport()
    steps: list[Step] = []
    filled_by: dict[str, str] = {}
    target_records: dict[str, TargetRecord] = {}
    for key in sorted(state_dict):
        shape, dtype = tuple(state_dict[key].shape), dtype_name(state_dict[key].dtype)
        if key in IGNORED:
            report.sources.append(SourceRecord(key, IGNORED_STATUS, shape, dtype, reason=IGNORED[key]))
            continue
        found = find_rule(key)
        if found is None or any(t not in expected for t in found[0].expand(found[1])[1]):
            report.sources.append(SourceRecord(key, UNUSED, shape, dtype, reason="no rule maps this name"))
            continue
        rule, index = found
        _, targets = rule.expand(index)
        report.sources.append(
            SourceRecord(key, TRANSFORMED if rule.op.transforms else MAPPED, shape, dtype, targets, rule.op.name)
        )
        fits = True
        for target, out_shape in zip(targets, rule.op.shapes([shape]), strict=True):
            if target in filled_by:
                source = f"{filled_by[target]} and {key}"
                target_records[target] = TargetRecord(
                    target, CONFLICT, expected[target], out_shape, dtype, source, rule.op.name
                )
                fits = False
                continue
            filled_by[target] = key
            status = FILLED if out_shape == expected[target] else SHAPE_MISMATCH
            fits = fits and status == FILLED
            target_records[target] = TargetRecord(target, status, expected[target], out_shape, dtype, key, rule.op.name)
        if fits:
            steps.append(Step((key,), rule.op, targets))
    for target, shape in expected.items():
        if target not in target_records:
            target_records[target] = TargetRecord(target, MISSING, shape)
    report.targets = [target_records[key] for key in sorted(target_records)]
    return steps, report


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


def dtype_elements(specs: Iterable[TensorSpec]) -> Counter[torch.dtype]:
    """How many elements each dtype holds over ``specs`` (``most_common()`` ranks a mixed checkpoint's dtypes)."""
    elements: Counter[torch.dtype] = Counter()
    for _, shape, dtype in specs:
        elements[dtype] += math.prod(shape)
    return elements


def majority_dtype(specs: Iterable[TensorSpec]) -> torch.dtype:
    """The dtype that holds the most elements (what config.json records for a mixed checkpoint)."""
    elements = dtype_elements(specs)
    return elements.most_common(1)[0][0] if elements else torch.float32

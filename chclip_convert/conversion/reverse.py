"""transformers ``ChineseCLIPModel`` folder → original Chinese-CLIP checkpoint, from the same table.

Each standard rule of :mod:`chclip_convert.mapping.table` is run backwards with its op's ``reverse_op``
(q, k, v concatenated back into ``in_proj``; projections transposed back), so the two directions cannot
drift apart. As forward, the whole reverse conversion is planned from names and shapes before any tensor
is read — against the shapes the folder's ``config.json`` implies, and q/k/v against each other — and
every problem is named in one :class:`MappingError` with the same key report.

The result is what cn_clip's training writes, or a bare state dict (docs/conversion.md, "The way back").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from chclip_convert.conversion.state_dict import Step, TensorLike, apply_steps, dtype_name
from chclip_convert.conversion.summary import TRAINING_FIELD
from chclip_convert.errors import CheckpointReadError, MappingError
from chclip_convert.files.checkpoint import TRAINING_KEYS, TRAINING_LABELS, checkpoint_writer, describe_training
from chclip_convert.files.folder import folder_tensor_specs, load_folder_state, read_config
from chclip_convert.files.output import check_output_file, output_lock
from chclip_convert.files.records import read_report
from chclip_convert.mapping.architecture import expected_shapes
from chclip_convert.mapping.parts import LAYER, TEXT, VISION, part_of
from chclip_convert.mapping.report import (
    FILLED,
    MAPPED,
    MISSING,
    REVERSE_FIXES,
    SHAPE_MISMATCH,
    TRANSFORMED,
    UNEXPECTED,
    ConversionReport,
    SourceRecord,
    TargetRecord,
)
from chclip_convert.mapping.table import REVERSE_IGNORED, Rule, find_reverse_rule, standard_rules_by_layer
from chclip_convert.names import REPORT_FILE


@dataclass(frozen=True)
class TrainingRecord:
    """The epoch, step and run name a reversed training dict carries, and where they came from."""

    values: dict  # "epoch", "step", "name"
    origin: str  # in words: the folder's record, or why the defaults
    recorded: bool  # whether any value came from the folder's record


@dataclass
class ReverseSummary:
    """What a reverse conversion wrote: the file, its layout and, for a training dict, its metadata."""

    output: Path
    source: Path
    tensors: int
    parameter_count: int
    bare: bool
    training: TrainingRecord | None = None  # None for a bare state dict

    def to_text(self) -> str:
        head = f"Reversed {self.source} → {self.output}"
        tensors = f"  tensors:    {self.tensors} ({self.parameter_count:,} parameters)"
        if self.bare or self.training is None:
            layout = "  layout:     bare state dict (no epoch, step or run name)"
            load = (
                "  load with model.load_state_dict(torch.load(<file>)); cn_clip's --resume takes the training dict "
                "(reverse without --bare)"
            )
            return "\n".join([head, layout, tensors, load])
        values = self.training.values
        resume = "--resume <file> --reset-optimizer" + (
            f" (continues after epoch {values['epoch']}, step {values['step']}; add --reset-data-offset to start "
            "from epoch 0)"
            if self.training.recorded
            else " --reset-data-offset"
        )
        lines = [
            head,
            "  layout:     training dict (module. keys, no optimizer state)",
            f"  training:   {describe_training(values)} ({self.training.origin})",
            tensors,
            f"  resume with cn_clip training: {resume}",
        ]
        return "\n".join(lines)


@dataclass
class ReversePlan:
    """The steps and the key report, decided from names and shapes alone.

    The report reads as a forward one would: ``sources`` are the original keys to write, ``targets`` the
    folder's keys (``filled``, ``missing``, ``shape_mismatch`` or ``unexpected``)."""

    steps: list[Step]
    report: ConversionReport

    def apply(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Original key → tensor (no ``module.`` prefix), in sorted order."""
        tensors = {key: tensor for key, tensor, _ in apply_steps(self.steps, state_dict.__getitem__)}
        return {key: tensors[key] for key in sorted(tensors)}


def plan_reverse(
    specs: Mapping[str, TensorLike],
    *,
    expected: Mapping[str, tuple[int, ...]] | None = None,
    path: str | Path | None = None,
) -> ReversePlan:
    """Plan turning a folder's tensors back into original ones; raise before anything is read.

    Args:
        specs: folder key → tensor, or anything with ``shape`` and ``dtype``.
        expected: the shapes the folder's config implies (:func:`~chclip_convert.mapping.architecture.expected_shapes`);
            without it, only what the tensors say of each other is checked (q, k, v alike; projections 2-d).
        path: the folder, named in errors.

    Raises:
        MappingError: naming every unexpected, missing or wrongly shaped key, with the shape it must have.
    """
    report = ConversionReport()
    groups: dict[tuple[Rule, int | None], list[str]] = {}
    for key in sorted(specs):
        if key in REVERSE_IGNORED:
            report.notes.append(f"{key} not converted: {REVERSE_IGNORED[key]}")
            continue
        found = find_reverse_rule(key)
        if found is None:
            report.targets.append(_target(key, UNEXPECTED, None, specs[key]))
            continue
        groups.setdefault(found, []).append(key)
    wanted = dict(expected) if expected is not None else dict.fromkeys(_table_targets(specs))
    unfilled = set(wanted) - set(specs)
    steps = [
        step
        for rule, index in groups
        if (step := _plan_group(rule, index, specs, wanted, report, unfilled, expected is not None)) is not None
    ]
    report.targets += [TargetRecord(key, MISSING, wanted.get(key)) for key in sorted(unfilled)]
    report.targets.sort(key=lambda record: record.key)
    report.sources.sort(key=lambda record: record.key)
    if not report.ok:
        evidence = "config.json" if expected is not None else "the other tensors (no config given)"
        raise MappingError(
            "the folder's weights do not map back onto an original Chinese-CLIP checkpoint; nothing was written. "
            f"Shapes expected from {evidence}.\n" + report.format_problems(fixes=REVERSE_FIXES, shapes=True),
            path=path,
            report=report,
        )
    return ReversePlan(steps, report)


def _plan_group(rule, index, specs, wanted, report, unfilled: set[str], from_config: bool) -> Step | None:
    """Check one original tensor's folder parts; record them; return its step if every part fits."""
    original, parts = rule.expand(index)
    shapes = [tuple(specs[p].shape) for p in parts if p in specs]
    # the shape every part of a fused q/k/v must share: the most common one
    fitting = Counter(shapes).most_common(1)[0][0] if len(rule.targets) > 1 and shapes else None
    fits = True
    for part in parts:
        if part not in specs:
            unfilled.add(part)
            wanted.setdefault(part, fitting)
            fits = False
            continue
        if from_config and part not in wanted:  # a layer or tensor the folder's config does not have
            report.targets.append(_target(part, UNEXPECTED, None, specs[part]))
            fits = False
            continue
        shape = tuple(specs[part].shape)
        needed = wanted.get(part) or fitting
        if needed is None and (rule.op.name != "transpose" or len(shape) == 2):
            needed = shape  # nothing to check it against but its own number of dimensions
        status = FILLED if shape == needed else SHAPE_MISMATCH
        fits = fits and status == FILLED
        dtype = dtype_name(specs[part].dtype)
        report.targets.append(TargetRecord(part, status, needed, shape, dtype, original, rule.op.name))
    if not fits:
        return None
    op = rule.op.reverse_op
    shape = op.shapes([tuple(specs[p].shape) for p in parts])[0]
    dtypes = ", ".join(sorted({dtype_name(specs[p].dtype) for p in parts}))
    status = TRANSFORMED if op.transforms else MAPPED
    report.sources.append(SourceRecord(original, status, shape, dtypes, parts, op.name))
    return Step(parts, op, (original,))


def _table_targets(specs: Mapping[str, TensorLike]) -> list[str]:
    """Without a config: every target the table fills for towers as deep as the folder's deepest layers."""
    depth = {VISION: 0, TEXT: 0}
    for part in map(part_of, specs):
        if part.section == LAYER and part.tower in depth:
            depth[part.tower] = max(depth[part.tower], part.layer + 1)
    rules = standard_rules_by_layer(depth[VISION], depth[TEXT])
    return [target for rule, index in rules for target in rule.expand(index)[1]]


def _target(key: str, status: str, expected, spec) -> TargetRecord:
    return TargetRecord(key, status, expected, tuple(spec.shape), dtype_name(spec.dtype))


def reverse_state_dict(
    state_dict: dict[str, torch.Tensor],
    *,
    path: str | Path | None = None,
    expected: Mapping[str, tuple[int, ...]] | None = None,
) -> dict[str, torch.Tensor]:
    """Turn ``ChineseCLIPModel`` tensors into original names (no ``module.`` prefix).

    Args:
        expected: the shapes the folder's config implies; see :func:`plan_reverse`.

    Raises:
        MappingError: naming every key no rule uses, every key missing and every shape that does not fit.
    """
    return plan_reverse(state_dict, expected=expected, path=path).apply(state_dict)


def reverse_folder(
    folder: str | Path, output: str | Path, *, bare: bool = False, overwrite: bool = False
) -> ReverseSummary:
    """Write the original-format checkpoint of a transformers folder to ``output`` (atomically).

    Args:
        folder: a ``ChineseCLIPModel`` folder — converted by this tool or published elsewhere.
        output: the ``.pt`` file to write; refused if it exists, unless ``overwrite``.
        bare: write ``model.state_dict()``-style (no ``module.`` prefix, no epoch/step) instead of the
            training dict.

    Raises:
        ConversionError: (a subclass) for an unreadable or damaged folder, or an unusable output; nothing
            is written.
    """
    folder = Path(folder)
    with output_lock(output):  # one writer, from this check to the rename
        return _reverse_into(
            folder, check_output_file(output, input_folder=folder, overwrite=overwrite), bare, overwrite
        )


def _reverse_into(folder: Path, output: Path, bare: bool, overwrite: bool) -> ReverseSummary:
    plan = plan_reverse(folder_tensor_specs(folder), expected=folder_expected_shapes(folder), path=folder)
    state = plan.apply(load_folder_state(folder))
    training = None if bare else recorded_training(folder)
    with checkpoint_writer(output, overwrite=overwrite) as writer:
        writer.bare, writer.prefix = training is None, "" if training is None else writer.prefix
        writer.metadata = training.values if training is not None else {}
        for key, tensor in state.items():
            writer.add(key, tensor)
    return ReverseSummary(output, folder, len(state), sum(t.numel() for t in state.values()), bare, training)


def recorded_training(folder: str | Path) -> TrainingRecord:
    """The epoch, step and run name to write for ``folder``: each as its ``conversion_report.json`` records it
    (see :class:`chclip_convert.conversion.summary.ConversionSummary`), else the default — epoch 0, step 0, run
    ``from <folder name>`` — and said so in ``origin``. Never raises: an unreadable record means the defaults."""
    folder = Path(folder)
    defaults = {"epoch": 0, "step": 0, "name": f"from {folder.name}"}
    try:
        report = read_report(folder)
    except CheckpointReadError as error:
        return TrainingRecord(defaults, f"defaults: {error.message}", False)
    record = report.get(TRAINING_FIELD) if report is not None else None
    if not isinstance(record, dict):
        why = f"the folder has no {REPORT_FILE}" if report is None else f"its {REPORT_FILE} records none"
        return TrainingRecord(defaults, f"defaults: {why}", False)
    found = {key: record[key] for key in TRAINING_KEYS if _usable(key, record.get(key))}
    if not found:
        return TrainingRecord(
            defaults, f"defaults: {REPORT_FILE} records none, as for a bare state dict's conversion", False
        )
    unused = [TRAINING_LABELS[key] for key in TRAINING_KEYS if key not in found]
    origin = f"from {REPORT_FILE}" + (f"; {', '.join(unused)}: default, none recorded" if unused else "")
    return TrainingRecord({**defaults, **found}, origin, True)


def _usable(key: str, value) -> bool:
    """Whether ``value`` is what cn_clip's training writes under ``key``: a run name, or a count from 0."""
    if key == "name":
        return isinstance(value, str)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def folder_expected_shapes(folder: str | Path) -> dict[str, tuple[int, ...]] | None:
    """The tensor shapes the folder's ``config.json`` implies, or ``None`` without a config."""
    config = read_config(folder)
    if config is None:
        return None
    try:
        return expected_shapes(config)
    except Exception as error:  # a config transformers cannot build a model from (e.g. heads not dividing)
        raise CheckpointReadError(f"config.json does not describe a buildable model: {error}", path=folder) from error

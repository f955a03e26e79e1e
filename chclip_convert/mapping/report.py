"""The conversion report: what happened to every source key and every target key.

Source keys are ``mapped`` (renamed), ``transformed`` (split or transposed), ``ignored`` (with a reason)
or ``unused``. Target keys are ``filled``, ``missing``, ``shape_mismatch``, ``conflict`` (filled twice) or,
when a transformers folder is read back, ``unexpected`` (no rule maps it back).
Problems are shown once, with layer indices collapsed (``layers.{0...11}``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from chclip_convert.mapping.parts import layer_span
from chclip_convert.mapping.table import split_layer_index
from chclip_convert.names import (
    CONFLICT,
    FILLED,
    IGNORED,
    MAPPED,
    MISSING,
    PROBLEM_STATUSES,
    SHAPE_MISMATCH,
    TRANSFORMED,
    UNEXPECTED,
    UNUSED,
)

FIXES = {
    UNUSED: "the checkpoint holds tensors that no Chinese-CLIP ViT layer uses — check it is the right file, "
    "or pass --no-strict to drop them on purpose.",
    MISSING: "the checkpoint lacks tensors the model needs — it may be truncated, pruned or saved from a "
    "different model; re-save it from the training run.",
    SHAPE_MISMATCH: "a tensor's shape disagrees with the rest of the model — a config field or one layer "
    "differs; check the config or the layer that was edited.",
    CONFLICT: "two source tensors fill the same target — the checkpoint mixes the standard and "
    "flash-attention layouts for one layer.",
    UNEXPECTED: "the folder holds tensors that no rule maps back — it was edited or holds another model; "
    "remove them, or convert again from the original checkpoint.",
}
# The same problems met when a transformers folder is turned back into an original checkpoint.
REVERSE_FIXES = {
    **FIXES,
    MISSING: "the folder lacks tensors the model needs — it was truncated or edited; convert again from the "
    "original checkpoint, or restore the missing tensors.",
    SHAPE_MISMATCH: "a tensor's shape disagrees with config.json or with its sibling q/k/v projections — the "
    "folder was edited; convert again from the original checkpoint.",
}


@dataclass(frozen=True)
class SourceRecord:
    key: str
    status: str
    shape: tuple[int, ...]
    dtype: str
    targets: tuple[str, ...] = ()
    op: str = ""
    reason: str = ""


@dataclass(frozen=True)
class TargetRecord:
    key: str
    status: str
    expected_shape: tuple[int, ...] | None
    shape: tuple[int, ...] | None = None
    dtype: str = ""
    source: str = ""
    op: str = ""


@dataclass
class ConversionReport:
    """Every source and target key with its fate; ``ok`` is False when any problem was found."""

    sources: list[SourceRecord] = field(default_factory=list)
    targets: list[TargetRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(self.problems().values())

    def problems(self) -> dict[str, list[str]]:
        """Problem status → sorted keys (source keys for ``unused``, target keys otherwise)."""
        found: dict[str, list[str]] = {status: [] for status in PROBLEM_STATUSES}
        for record in [*(r for r in self.sources if r.status == UNUSED), *self.targets]:
            if record.status in found:
                found[record.status].append(record.key)
        return {status: sorted(keys) for status, keys in found.items()}

    def counts(self) -> dict[str, int]:
        sides = (("source", self.sources), ("target", self.targets))
        return dict(Counter(f"{side} {record.status}" for side, records in sides for record in records))

    def format_problems(
        self, statuses: tuple[str, ...] = PROBLEM_STATUSES, *, fixes: dict[str, str] = FIXES, shapes: bool = False
    ) -> str:
        """One paragraph per kind of problem in ``statuses``, keys collapsed, each with how to fix it;
        with ``shapes``, every missing key is listed with the shape it must have."""
        lines = []
        details = {r.key: r for r in self.targets}
        for status, keys in self.problems().items():
            if not keys or status not in statuses:
                continue
            lines.append(f"{len(keys)} {status.replace('_', ' ')} key(s): {fixes[status]}")
            if status == SHAPE_MISMATCH:
                lines.extend(f"    {key}: got {_shape(details[key].shape)}, {_expected(details[key])}" for key in keys)
            elif status == MISSING and shapes:
                for key in keys:
                    shape = details[key].expected_shape
                    lines.append(f"    {key}: expected shape {list(shape)}" if shape else f"    {key}")
            else:
                lines.extend(f"    {key}" for key in collapse_layers(keys))
        return "\n".join(lines)

    def summary(self) -> str:
        counts = self.counts()
        parts = [f"{counts.get(f'source {s}', 0)} {s}" for s in (MAPPED, TRANSFORMED, IGNORED, UNUSED)]
        targets = [f"{counts.get(f'target {s}', 0)} {s}" for s in (FILLED, MISSING, SHAPE_MISMATCH, CONFLICT)]
        if counts.get(f"target {UNEXPECTED}"):
            targets.append(f"{counts[f'target {UNEXPECTED}']} {UNEXPECTED}")
        status = "OK" if self.ok else "PROBLEMS"
        return f"{status}: source keys {', '.join(parts)}; target keys {', '.join(targets)}"

    def rows(self) -> list[dict]:
        """One flat dict per key (source and target), for tables."""
        return [
            {
                "side": "source",
                "key": r.key,
                "status": r.status,
                "shape": list(r.shape),
                "dtype": r.dtype,
                "counterpart": ", ".join(r.targets),
                "op": r.op,
                "reason": r.reason,
            }
            for r in self.sources
        ] + [
            {
                "side": "target",
                "key": r.key,
                "status": r.status,
                "shape": list(r.shape) if r.shape is not None else None,
                "dtype": r.dtype,
                "counterpart": r.source,
                "op": r.op,
                "reason": (
                    f"expected shape {list(r.expected_shape)}"
                    if r.status == SHAPE_MISMATCH and r.expected_shape
                    else ""
                ),
            }
            for r in self.targets
        ]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "notes": list(self.notes),
            "problems": self.problems(),
            "sources": [asdict(r) for r in self.sources],
            "targets": [asdict(r) for r in self.targets],
        }


def _shape(shape: tuple[int, ...] | None) -> str:
    return str(list(shape)) if shape is not None else "?"


def _expected(record: TargetRecord) -> str:
    if record.expected_shape is not None:
        return f"expected {list(record.expected_shape)}"
    return "expected 2 dimensions" if record.op == "transpose" else "expected another shape"


def collapse_layers(keys: list[str]) -> list[str]:
    """``["a.0.b", "a.1.b", "a.2.b", "c"]`` → ``["a.{0...2}.b", "c"]``; gaps shown as ``{0,2,5}``
    (:func:`chclip_convert.mapping.parts.layer_span`, the notation the summaries' ``layers 0–8`` come from too)."""
    groups: dict[str, list[int]] = {}  # in the order the keys come
    for key in keys:
        template, index = split_layer_index(key)
        indices = groups.setdefault(key if index is None else template, [])
        if index is not None:
            indices.append(index)
    return [
        template.replace("{i}", layer_span(indices, in_key=True)) if indices else template
        for template, indices in groups.items()
    ]

"""What an export did: the files written, every check and its verdict, as text for people and a dict for JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chclip_convert.export.parity import TOLERANCES, Check
from chclip_convert.units import human_size


@dataclass
class ExportReport:
    """The result of :func:`~chclip_convert.export.pipeline.export_onnx`; ``ok`` when every check passed."""

    source: Path
    folder: Path  # the transformers folder exported from (made from the checkpoint when ``converted``)
    output_dir: Path  # the folder holding the .onnx files
    converted: bool
    opset: int
    files: dict[str, int] = field(default_factory=dict)  # file name → bytes
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    kept_failed: bool = False

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]

    def to_text(self) -> str:
        """The files, one line per file and batch case with its worst figures, the failures named, the verdict."""
        lines = [f"Export {self.source} → {self.output_dir}"]
        if self.converted:
            lines.append(f"  converted first into {self.folder}")
        lines.append(f"  opset {self.opset}; {len(self.files)} files in {self.seconds:.1f} s:")
        lines += [f"    {name}  {human_size(size)}" for name, size in sorted(self.files.items())]
        lines.append("  onnxruntime against PyTorch (max abs diff relative to the output's scale; least cosine):")
        lines += [f"    {line}" for line in self._summary_lines()]
        lines += [f"  FAIL  {check.describe()}" for check in self.failures]
        if self.ok:
            lines.append("Exported and verified: every check passes.")
        else:
            kept = "kept as asked (--keep-failed)" if self.kept_failed else "nothing was left behind"
            lines.append(f"Export verification FAILED ({len(self.failures)} checks); {kept}.")
        return "\n".join(lines)

    def _summary_lines(self) -> list[str]:
        rows = self.summary_rows()
        width = max((len(row.file) for row in rows), default=0)
        return [row.to_text(width) for row in rows]

    def summary_rows(self) -> list[SummaryRow]:
        """One row per file and batch case, with its worst figures: the parity table."""
        rows: dict[tuple[str, str], list[Check]] = {}
        for check in self.checks:
            if check.case != "loading":
                rows.setdefault((check.file, check.case), []).append(check)
        return [SummaryRow.of(file, case, checks) for (file, case), checks in rows.items()]

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "source": str(self.source),
            "folder": str(self.folder),
            "output_dir": str(self.output_dir),
            "converted": self.converted,
            "opset": self.opset,
            "files": dict(sorted(self.files.items())),
            "tolerances": {name: vars(tolerance) for name, tolerance in TOLERANCES.items()},
            "checks": [check.to_dict() for check in self.checks],
            "failures": [check.describe() for check in self.failures],
            "kept_failed": self.kept_failed,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class SummaryRow:
    """A file's worst figures in one batch case: max abs difference relative to the output's scale, least cosine
    of its embeddings (``None``: it has none), images whose best caption agrees (``None``: no logits)."""

    file: str
    variant: str
    case: str
    relative_difference: float
    min_cosine: float | None
    top1: str | None
    ok: bool

    @classmethod
    def of(cls, file: str, case: str, checks: list[Check]) -> SummaryRow:
        relative = max(
            (c.value for c in checks if c.metric.startswith("max abs") and isinstance(c.value, float)), default=0.0
        )
        cosines = [c.value for c in checks if c.metric == "min cosine" and isinstance(c.value, float)]
        top1 = next((str(c.value) for c in checks if c.metric == "top-1 agrees"), None)
        ok = all(c.ok for c in checks)
        return cls(file, checks[0].variant, case, relative, min(cosines) if cosines else None, top1, ok)

    def to_text(self, width: int = 0) -> str:
        parts = [f"diff {self.relative_difference:.1e}"]
        parts += [f"cosine {self.min_cosine:.6f}"] if self.min_cosine is not None else []
        parts += [f"top-1 {self.top1}"] if self.top1 is not None else []
        return f"{'PASS' if self.ok else 'FAIL'}  {self.file:{width}}  {self.case:10} {', '.join(parts)}"

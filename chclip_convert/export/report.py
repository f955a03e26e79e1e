"""What an export did: the files written, every check and its verdict, as text for people and a dict for JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chclip_convert.export.parity import TOLERANCES, Check
from chclip_convert.files.records import ABSOLUTE, PATHS_FIELD, RELATIVE, shareable_path
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
    original_checkpoint: Path | None = None  # what cn_clip's own model ran, the files checked against it too
    original_skipped: str = ""  # or why they were not

    @property
    def original(self) -> str:
        """How the files were compared with cn_clip's own model, or why they were not."""
        if self.original_checkpoint is not None:
            return f"compared with cn_clip's own model on {self.original_checkpoint}"
        return f"not compared with cn_clip: {self.original_skipped}" if self.original_skipped else ""

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
        lines.append(
            "  onnxruntime against PyTorch, and cn_clip where said (max abs diff / the output's scale; least cosine):"
        )
        if self.original:
            lines.append(f"  {self.original}")
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
        case_width = max((len(row.case) for row in rows), default=0)
        return [row.to_text(width, case_width) for row in rows]

    def summary_rows(self) -> list[SummaryRow]:
        """One row per file and batch case, with its worst figures: the parity table."""
        rows: dict[tuple[str, str], list[Check]] = {}
        for check in self.checks:
            if check.case != "loading":
                rows.setdefault((check.file, check.case), []).append(check)
        return [SummaryRow.of(file, case, checks) for (file, case), checks in rows.items()]

    def to_dict(self, *, relative_to: Path | None = None) -> dict:
        """The report as JSON data; with ``relative_to`` (the folder the record goes into, to be shared) every
        path relative to it, or a file's name, never one that names this machine."""

        def shown(path: Path | None) -> str | None:
            if path is None:
                return None
            return shareable_path(path, relative_to) if relative_to is not None else str(path)

        return {
            "ok": self.ok,
            PATHS_FIELD: RELATIVE if relative_to is not None else ABSOLUTE,
            "source": shown(self.source),
            "folder": shown(self.folder),
            "output_dir": shown(self.output_dir),
            "converted": self.converted,
            "opset": self.opset,
            "files": dict(sorted(self.files.items())),
            "tolerances": {name: vars(tolerance) for name, tolerance in TOLERANCES.items()},
            "checks": [check.to_dict() for check in self.checks],
            "failures": [check.describe() for check in self.failures],
            "kept_failed": self.kept_failed,
            "original": {"checkpoint": shown(self.original_checkpoint), "skipped": self.original_skipped},
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

    def to_text(self, width: int = 0, case_width: int = 10) -> str:
        parts = [f"diff {self.relative_difference:.1e}"]
        parts += [f"cosine {self.min_cosine:.6f}"] if self.min_cosine is not None else []
        parts += [f"top-1 {self.top1}"] if self.top1 is not None else []
        return f"{'PASS' if self.ok else 'FAIL'}  {self.file:{width}}  {self.case:{case_width}}  {', '.join(parts)}"

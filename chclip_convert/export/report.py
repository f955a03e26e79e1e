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
        rows: dict[tuple[str, str], list[Check]] = {}
        for check in self.checks:
            if check.case != "loading":
                rows.setdefault((check.file, check.case), []).append(check)
        width = max((len(file) for file, _ in rows), default=0)
        return [_summary_line(file, case, checks, width) for (file, case), checks in rows.items()]

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


def _summary_line(file: str, case: str, checks: list[Check], width: int) -> str:
    relative = max(
        (c.value for c in checks if c.metric.startswith("max abs") and isinstance(c.value, float)), default=0.0
    )
    cosines = [c.value for c in checks if c.metric == "min cosine" and isinstance(c.value, float)]
    top1 = next((c.value for c in checks if c.metric == "top-1 agrees"), None)
    parts = [f"diff {relative:.1e}"]
    parts += [f"cosine {min(cosines):.6f}"] if cosines else []
    parts += [f"top-1 {top1}"] if top1 is not None else []
    mark = "PASS" if all(c.ok for c in checks) else "FAIL"
    return f"{mark}  {file:{width}}  {case:10} {', '.join(parts)}"

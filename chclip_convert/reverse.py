"""transformers ``ChineseCLIPModel`` folder → original Chinese-CLIP checkpoint, from the same table.

Each standard rule of :mod:`chclip_convert.mapping` is run backwards with its op's ``reverse_op``
(q, k, v concatenated back into ``in_proj``; projections transposed back), so the two directions cannot
drift apart. The result is what cn_clip's training writes — ``{"epoch", "step", "name", "state_dict"}``
with ``module.`` keys — or a bare state dict, and cn_clip's ``CLIP.load_state_dict(strict=True)`` takes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointReadError, MappingError, OutputError, UnsupportedCheckpointError
from .mapping import REVERSE_IGNORED, find_reverse_rule
from .report import collapse_layers

BIN_FILE = "pytorch_model.bin"
PARTIAL_SUFFIX = ".chclip-partial"


@dataclass
class ReverseSummary:
    output: Path
    source: Path
    tensors: int
    parameter_count: int
    bare: bool

    def to_text(self) -> str:
        layout = "bare state dict" if self.bare else "training dict (epoch 0, step 0, module. keys)"
        return (
            f"Reversed {self.source} → {self.output}\n"
            f"  layout:     {layout}\n"
            f"  tensors:    {self.tensors} ({self.parameter_count:,} parameters)\n"
            "  resume with cn_clip training: --resume <file> --reset-data-offset --reset-optimizer"
        )


def reverse_state_dict(
    state_dict: dict[str, torch.Tensor], *, path: str | Path | None = None
) -> dict[str, torch.Tensor]:
    """Turn ``ChineseCLIPModel`` tensors into original names (no ``module.`` prefix).

    Raises:
        MappingError: naming every key no rule uses and every rule whose tensors are incomplete.
    """
    reversed_state: dict[str, torch.Tensor] = {}
    used: set[str] = {key for key in state_dict if key in REVERSE_IGNORED}
    incomplete: set[str] = set()
    for key in sorted(state_dict):
        found = find_reverse_rule(key)
        if found is None or key in used:
            continue
        rule, index = found
        source, targets = rule.expand(index)
        absent = [target for target in targets if target not in state_dict]
        if absent:
            incomplete.update(absent)
            used.update(t for t in targets if t in state_dict)
            continue
        (reversed_state[source],) = rule.op.reverse_op.apply([state_dict[target] for target in targets])
        used.update(targets)
    unused = sorted(set(state_dict) - used)
    if unused or incomplete:
        lines = []
        if unused:
            lines.append(f"{len(unused)} key(s) no rule maps back:")
            lines += [f"    {key}" for key in collapse_layers(unused)]
        if incomplete:
            lines.append(f"{len(incomplete)} key(s) missing to rebuild a fused tensor:")
            lines += [f"    {key}" for key in collapse_layers(sorted(incomplete))]
        raise MappingError(
            "the folder's weights do not map back onto an original Chinese-CLIP checkpoint; nothing was "
            "written.\n" + "\n".join(lines),
            path=path,
        )
    return dict(sorted(reversed_state.items()))


def load_folder_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers folder: ``*.safetensors`` (single or sharded) or ``pytorch_model.bin``."""
    folder = Path(folder)
    if not folder.is_dir():
        if folder.is_file():
            raise UnsupportedCheckpointError(
                "is a file; --reverse reads a transformers folder (config.json + weights). To convert an original "
                ".pt checkpoint, drop --reverse.",
                path=folder,
            )
        raise CheckpointReadError("no such folder.", path=folder)
    config = folder / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
        if model_type not in (None, "chinese_clip"):
            raise UnsupportedCheckpointError(f"is a {model_type!r} model, not chinese_clip.", path=folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for file in files:
            state.update(load_file(str(file)))
        return state
    if (folder / BIN_FILE).is_file():
        try:
            return torch.load(folder / BIN_FILE, map_location="cpu", weights_only=True)
        except Exception as error:
            raise CheckpointReadError(f"cannot read {BIN_FILE}: {error}", path=folder) from error
    raise CheckpointReadError("holds no *.safetensors or pytorch_model.bin weights.", path=folder)


def reverse_folder(
    folder: str | Path, output: str | Path, *, bare: bool = False, overwrite: bool = False
) -> ReverseSummary:
    """Write the original-format checkpoint of a transformers folder to ``output`` (atomically).

    Args:
        folder: a ``ChineseCLIPModel`` folder — converted by this tool or published elsewhere.
        output: the ``.pt`` file to write; refused if it exists, unless ``overwrite``.
        bare: write ``model.state_dict()``-style (no ``module.`` prefix, no epoch/step) instead of the
            training dict.
    """
    folder, output = Path(folder), Path(output).expanduser()
    if output.is_dir():
        raise OutputError("is a folder; give the path of the .pt file to write.", path=output)
    if output.exists() and not overwrite:
        raise OutputError("exists; pass --overwrite (overwrite=True) to replace it.", path=output)
    state = reverse_state_dict(load_folder_state(folder), path=folder)
    payload: dict = (
        state
        if bare
        else {
            "epoch": 0,
            "step": 0,
            "name": f"from {folder.name}",
            "state_dict": {f"module.{k}": v for k, v in state.items()},
        }
    )
    partial = output.with_name(output.name + PARTIAL_SUFFIX)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        torch.save(payload, partial)
        os.replace(partial, output)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OutputError(
            f"writing failed: {error.strerror or error}; nothing was changed. Free space or fix the permissions "
            "of the target's folder, then run again.",
            path=output,
        ) from error
    return ReverseSummary(output, folder, len(state), sum(t.numel() for t in state.values()), bare)

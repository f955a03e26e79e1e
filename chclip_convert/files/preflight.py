"""Checks on a path before anything is read from it: cheap, and free of torch and transformers, so that a
widget can check what the user types at once, before those libraries are loaded."""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub.constants import SAFETENSORS_INDEX_FILE, SAFETENSORS_SINGLE_FILE

from chclip_convert.errors import CheckpointReadError, UnsupportedCheckpointError
from chclip_convert.names import BIN_FILE, CONFIG_FILE, RUN_SUBFOLDER, WEIGHTS_SUFFIX


def cn_clip_run(checkpoint: Path) -> Path | None:
    """The run folder of a checkpoint in cn_clip's layout (``<run>/checkpoints/<file>``), else ``None``."""
    return checkpoint.parent.parent if checkpoint.parent.name == RUN_SUBFOLDER else None


# Names a training loop gives every run's checkpoints alike (cn_clip's epoch3.pt and epoch_latest.pt, and the
# common step_500, checkpoint-1000, last, best): alone they do not say which run a file is from.
_RUN_FILE_NAME = re.compile(r"(epoch|step|checkpoint|ckpt)[-_]?(\d+|latest|last|best)?|last|best|latest", re.I)


def converted_name(checkpoint: Path) -> str:
    """The folder name a checkpoint converts into: ``<run>-<stem>-hf`` for a run's checkpoint, else ``<stem>-hf``.

    A run's checkpoint is one in cn_clip's layout (``run-a/checkpoints/epoch3.pt`` → ``run-a-epoch3-hf``) or one
    named as training loops name every run's files (``run-b/epoch3.pt`` → ``run-b-epoch3-hf``); a checkpoint
    whose name says what it is keeps it alone (``models/clip_cn_vit-b-16.pt`` → ``clip_cn_vit-b-16-hf``).
    """
    run = cn_clip_run(checkpoint)
    if run is None and _RUN_FILE_NAME.fullmatch(checkpoint.stem):
        run = checkpoint.parent
    return f"{run.name}-{checkpoint.stem}-hf" if run is not None and run.name else f"{checkpoint.stem}-hf"


def looks_converted(folder: Path) -> bool:
    """Whether ``folder`` holds a transformers model: a ``config.json`` beside weights."""
    weights = (SAFETENSORS_SINGLE_FILE, SAFETENSORS_INDEX_FILE, BIN_FILE)
    try:
        return (folder / CONFIG_FILE).is_file() and (
            any((folder / name).is_file() for name in weights) or any(folder.glob(f"*{WEIGHTS_SUFFIX}"))
        )
    except OSError:  # a folder this user may not enter holds nothing they can use
        return False


def held_weights(folder: Path) -> str:
    """The weights a transformers folder holds, in words: ``pytorch_model.bin``, ``model.safetensors``,
    ``3 safetensors shards``, or both kinds joined with ``+``."""
    shards = sorted(folder.glob("*.safetensors"))
    held = [f"{len(shards)} safetensors shards"] if len(shards) > 1 else [shard.name for shard in shards]
    held += [BIN_FILE] if (folder / BIN_FILE).is_file() else []
    return " + ".join(held) or "no weights"


def check_checkpoint_path(path: Path) -> None:
    """Raise a clear error unless ``path`` is a non-empty file that may be a torch checkpoint."""
    try:
        _check_checkpoint_path(path)
    except OSError as error:  # a folder on the way that this user may not enter, say
        raise CheckpointReadError(f"cannot be read: {error.strerror or error}.", path=path) from error


def _check_checkpoint_path(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise CheckpointReadError(
            f"is a link to {os.readlink(path)}, which does not exist (a disk not mounted?).", path=path
        )
    if not path.exists():
        raise CheckpointReadError("no such file.", path=path)
    if path.is_dir():
        if looks_converted(path):
            raise UnsupportedCheckpointError(
                f"this is a folder that is already in transformers format ({CONFIG_FILE} + {held_weights(path)}). "
                "To turn it back into an original checkpoint, use `chclip-convert reverse FOLDER OUTPUT.pt`.",
                path=path,
            )
        raise CheckpointReadError("is a folder; give the checkpoint file (.pt) inside it.", path=path)
    if path.stat().st_size == 0:
        raise CheckpointReadError(
            "the file is empty (0 bytes), so it is not a checkpoint; an interrupted copy or save? Copy or save it "
            "again.",
            path=path,
        )
    if _looks_like_safetensors(path):
        raise UnsupportedCheckpointError(
            "this is a safetensors file, i.e. already converted weights. The converter reads original "
            "Chinese-CLIP .pt checkpoints; to turn a converted folder back into one, use "
            "`chclip-convert reverse FOLDER OUTPUT.pt`.",
            path=path,
        )


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as stream:
        head = stream.read(9)
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_length < path.stat().st_size

"""Reading a transformers ``ChineseCLIPModel`` folder: its tensors (or only their shapes), its JSON files,
and the conversion options it records. Every problem is a :class:`ConversionError` naming the folder."""

from __future__ import annotations

import json
import zipfile
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from chclip_convert.errors import CheckpointReadError, ConversionError, UnsupportedCheckpointError
from chclip_convert.files.records import read_json, read_report
from chclip_convert.files.safetensors_writer import INDEX_FILE as SAFETENSORS_INDEX
from chclip_convert.files.safetensors_writer import SAFETENSORS_DTYPES, TensorSpec
from chclip_convert.names import BIN_FILE, CONFIG_FILE

if TYPE_CHECKING:
    from transformers import ChineseCLIPConfig


_SAFETENSORS_DTYPES = {code: dtype for dtype, code in SAFETENSORS_DTYPES.items()}


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers loads: those the shard index names, else every ``*.safetensors``."""
    index = read_json(folder, SAFETENSORS_INDEX)
    if index is None:
        return sorted(folder.glob("*.safetensors"))
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise CheckpointReadError(f"{SAFETENSORS_INDEX} has no weight_map of file names; convert again.", path=folder)
    files = [folder / name for name in sorted(set(weight_map.values()))]
    absent = [file.name for file in files if not file.is_file()]
    if absent:
        raise CheckpointReadError(
            f"{SAFETENSORS_INDEX} names shards that are missing: {', '.join(absent)}.", path=folder
        )
    return files


def _merge(state: dict, part: dict, file: Path, folder: Path) -> None:
    """Add one file's tensors; a key held by two files is an error (which copy transformers takes is not said)."""
    twice = sorted(set(state) & set(part))
    if twice:
        raise CheckpointReadError(
            f"{file.name} repeats tensors another file holds: {', '.join(twice[:5])}.", path=folder
        )
    state.update(part)


def load_folder_state(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a transformers folder: ``*.safetensors`` (single or sharded) or ``pytorch_model.bin``."""
    with FolderTensors(folder) as tensors:
        return {key: tensors.read(key) for key in tensors.names()}


def folder_tensor_specs(folder: str | Path) -> dict[str, TensorSpec]:
    """Name → shape and dtype of every tensor in a folder, from the safetensors headers alone."""
    with FolderTensors(folder) as tensors:
        return {key: tensors.spec(key) for key in tensors.names()}


class FolderTensors:
    """A folder's tensors read one at a time: the safetensors headers on opening (shards too), each tensor's
    data only when :meth:`read` asks for it. A ``pytorch_model.bin`` is memory-mapped where its format allows.
    Use as a context manager, or call :meth:`close`."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = _weights_folder(folder)
        self._stack = ExitStack()
        self._handles: dict[str, Any] = {}  # tensor name → the open file that holds it (None: the .bin)
        self._bin: dict[str, torch.Tensor] = {}
        files = weight_files(self.folder)
        if not files:
            self._bin = _load_bin(self.folder)
            self._handles = dict.fromkeys(self._bin, None)
        self._files: dict[str, str] = {}  # tensor name → its file's name, for messages
        for file in files:
            handle = self._open(file)
            part = dict.fromkeys(handle.keys(), handle)
            _merge(self._handles, part, file, self.folder)
            self._files.update(dict.fromkeys(part, file.name))

    def names(self) -> list[str]:
        return sorted(self._handles)

    def read(self, key: str) -> torch.Tensor:
        """The tensor ``key``, read now (a ``KeyError`` if the folder has none of that name)."""
        handle = self._handles[key]
        return self._bin[key] if handle is None else handle.get_tensor(key)

    def spec(self, key: str) -> TensorSpec:
        """The shape and dtype of ``key``, from its file's header (no data read)."""
        handle = self._handles[key]
        if handle is None:
            return TensorSpec(key, self._bin[key].shape, self._bin[key].dtype)
        piece = handle.get_slice(key)
        try:
            return TensorSpec(key, torch.Size(piece.get_shape()), _SAFETENSORS_DTYPES[piece.get_dtype()])
        except KeyError as error:
            message = f"{self._files[key]} holds a tensor of unsupported dtype {error}."
            raise CheckpointReadError(message, path=self.folder) from error

    def _open(self, file: Path):
        from safetensors import safe_open

        try:
            return self._stack.enter_context(safe_open(str(file), framework="pt"))
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise CheckpointReadError(f"cannot read {file.name}: {error}", path=self.folder) from error

    def close(self) -> None:
        self._stack.close()
        self._handles, self._bin = {}, {}

    def __enter__(self) -> FolderTensors:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_config(folder: str | Path) -> ChineseCLIPConfig | None:
    """The folder's ``config.json`` as a ``ChineseCLIPConfig``, or ``None`` if it has none."""
    data = read_json(folder, CONFIG_FILE)
    return None if data is None else _chinese_clip_config(data, Path(folder) / CONFIG_FILE, CheckpointReadError)


def load_config(path: str | Path) -> ChineseCLIPConfig:
    """Read a user's ``config.json`` (or a folder holding one) as a ``ChineseCLIPConfig``."""
    path = Path(path).expanduser()
    file = path / CONFIG_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConversionError("config file not found.", path=file) from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConversionError(f"config file is not valid JSON ({error}).", path=file) from error
    if not isinstance(data, dict) or data.get("model_type", "chinese_clip") != "chinese_clip":
        kind = f"model_type {data['model_type']!r}" if isinstance(data, dict) else type(data).__name__
        raise ConversionError(f"config is for {kind}, not 'chinese_clip'.", path=file)
    return _chinese_clip_config(data, file, ConversionError)


def _chinese_clip_config(data: dict[str, Any], file: Path, error_type: type[ConversionError]) -> ChineseCLIPConfig:
    from transformers import ChineseCLIPConfig

    try:
        return ChineseCLIPConfig.from_dict(data)
    except Exception as error:  # transformers validates configs with assorted exception types
        raise error_type(f"not a valid ChineseCLIPConfig: {error}", path=file) from error


def read_overrides(folder: str | Path) -> dict[str, Any] | None:
    """The conversion options the folder records (``conversion_report.json`` → ``"overrides"``), if any."""
    data = read_report(folder)
    overrides = data.get("overrides") if data else None
    return overrides if isinstance(overrides, dict) else None


def _weights_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        if folder.is_file():
            raise UnsupportedCheckpointError(
                "is a file, not a transformers folder (config.json + weights). To convert an original .pt "
                "checkpoint, use `chclip-convert convert`.",
                path=folder,
            )
        raise CheckpointReadError("no such folder.", path=folder)
    try:
        config = read_json(folder, CONFIG_FILE)
    except CheckpointReadError:
        config = None  # the weights are readable without it; whoever needs the config reports it
    if config is not None and config.get("model_type") not in (None, "chinese_clip"):
        raise UnsupportedCheckpointError(f"is a {config.get('model_type')!r} model, not chinese_clip.", path=folder)
    if not any(folder.glob("*.safetensors")) and not (folder / BIN_FILE).is_file():
        raise CheckpointReadError("holds no *.safetensors or pytorch_model.bin weights.", path=folder)
    return folder


def _load_bin(folder: Path) -> dict[str, torch.Tensor]:
    try:
        mmap = zipfile.is_zipfile(folder / BIN_FILE)  # only torch's zip format maps
        return torch.load(folder / BIN_FILE, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:
        raise CheckpointReadError(f"cannot read {BIN_FILE}: {error}", path=folder) from error

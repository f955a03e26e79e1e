"""The work folder: where the notebooks write (never into the checkout), and ``settings.json`` in it, which
remembers the checkpoint last chosen and the folder each checkpoint was converted into, so a choice made in
one notebook is offered by the others.

The folder is ``$CHCLIP_WORK``, else ``~/chclip-convert-work``. ``$CHCLIP_CHECKPOINT`` (set by
``scripts/run.sh CHECKPOINT``) chooses the checkpoint over the remembered one; without either, the notebooks
use the embedded demo, written into ``demo/`` of the work folder.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import warnings
from pathlib import Path

from ..constants import DEMO_FILE
from ..preflight import looks_converted as is_converted_folder

WORK_ENV = "CHCLIP_WORK"
CHECKPOINT_ENV = "CHCLIP_CHECKPOINT"
DEFAULT_WORK = "chclip-convert-work"
SETTINGS_FILE = "settings.json"
CONVERTED_DIR = "converted"
DEMO_SUBDIR = "demo"


def default_work_folder() -> Path:
    """``$CHCLIP_WORK``, else ``chclip-convert-work`` in the home folder."""
    given = os.environ.get(WORK_ENV)
    return Path(given).expanduser().absolute() if given else Path.home() / DEFAULT_WORK


class Workspace:
    """The work folder and its settings. Reading never fails: an unreadable settings file is reported once
    and set aside (``settings.json.unreadable``) when new settings are written, never silently lost."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().absolute() if root else default_work_folder()
        self.settings_path = self.root / SETTINGS_FILE

    def settings(self) -> dict:
        """The remembered settings, ``{}`` if none (or unreadable, with a warning naming the file)."""
        if not self.settings_path.is_file():
            return {}
        try:
            data = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            warnings.warn(f"{self.settings_path}: unreadable settings ({error}); starting afresh.", stacklevel=2)
            return {}
        return data if isinstance(data, dict) else {}

    def remember(self, checkpoint: str | Path, converted: str | Path | None = None) -> None:
        """Record ``checkpoint`` as the current choice and, if given, the folder it was converted into."""
        data = self.settings()
        data["checkpoint"] = str(Path(checkpoint).absolute())
        if converted is not None:
            data.setdefault("converted", {})[data["checkpoint"]] = str(Path(converted).absolute())
        self._write(data)

    def checkpoint(self) -> tuple[Path, bool]:
        """The checkpoint to work on, and whether it is the demo: ``$CHCLIP_CHECKPOINT``, else the one
        remembered (if it still exists), else the embedded demo."""
        given = os.environ.get(CHECKPOINT_ENV)
        if given:
            return Path(given).expanduser().absolute(), False
        remembered = self.settings().get("checkpoint")
        if remembered and Path(remembered).is_file() and not self.is_demo(Path(remembered)):
            return Path(remembered), False
        return self.demo_checkpoint(), True

    def demo_checkpoint(self) -> Path:
        """The embedded demo checkpoint, written into ``demo/`` of the work folder if not there yet."""
        path = self.root / DEMO_SUBDIR / DEMO_FILE
        if path.is_file():
            return path
        from ..demo import write_demo_checkpoint

        return write_demo_checkpoint(self.root / DEMO_SUBDIR)

    def is_demo(self, checkpoint: Path) -> bool:
        return checkpoint.absolute() == (self.root / DEMO_SUBDIR / DEMO_FILE).absolute()

    def converted_folder(self, checkpoint: str | Path) -> Path | None:
        """The folder ``checkpoint`` was last converted into, if it is still there."""
        remembered = self.settings().get("converted", {}).get(str(Path(checkpoint).absolute()))
        return Path(remembered) if remembered and is_converted_folder(Path(remembered)) else None

    def ensure_converted(self, checkpoint: str | Path) -> Path:
        """The folder ``checkpoint`` was converted into; if none, converted now into the work folder."""
        folder = self.converted_folder(checkpoint)
        if folder is None:
            from ..pipeline import convert_checkpoint

            folder = self.new_output(checkpoint)
            convert_checkpoint(checkpoint, folder)
            self.remember(checkpoint, folder)
        return folder

    def output_for(self, checkpoint: str | Path) -> Path:
        """Where to convert ``checkpoint``: the folder it was converted into before, else a new one."""
        return self.converted_folder(checkpoint) or self.new_output(checkpoint)

    def fresh_demo_output(self) -> Path:
        """The demo's conversion folder, emptied, so that the demo notebooks run the same way every time."""
        path = self.root / CONVERTED_DIR / f"{_checkpoint_name(Path(DEMO_FILE))}-hf"
        if path.is_dir():
            shutil.rmtree(path)
        return path

    def new_output(self, checkpoint: str | Path) -> Path:
        """A folder to convert ``checkpoint`` into: ``converted/<name>-hf`` in the work folder, numbered
        (``-2``, ``-3``…) past folders that already hold something."""
        base = self.root / CONVERTED_DIR / f"{_checkpoint_name(Path(checkpoint))}-hf"
        candidate, number = base, 1
        while candidate.exists() and (candidate.is_file() or any(candidate.iterdir())):
            number += 1
            candidate = base.with_name(f"{base.name}-{number}")
        return candidate

    def header_html(self) -> str:
        """The line each notebook shows at its top."""
        return (
            f"<b>Work folder</b> <code>{html.escape(str(self.root))}</code>: everything these notebooks write goes "
            f"here (set <code>{WORK_ENV}</code> to change it; <code>{CHECKPOINT_ENV}</code> chooses the checkpoint)."
        )

    def _write(self, data: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.settings_path.is_file() and self._unreadable():
            self.settings_path.replace(self.settings_path.with_name(SETTINGS_FILE + ".unreadable"))
        partial = self.settings_path.with_name(SETTINGS_FILE + ".partial")
        partial.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(partial, self.settings_path)

    def _unreadable(self) -> bool:
        try:
            return not isinstance(json.loads(self.settings_path.read_text(encoding="utf-8")), dict)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return True


def _checkpoint_name(checkpoint: Path) -> str:
    """``epoch_latest`` from ``…/run-a/checkpoints/epoch_latest.pt`` becomes ``run-a-epoch_latest``, since
    cn_clip names every run's files alike."""
    if checkpoint.parent.name == "checkpoints" and checkpoint.parent.parent.name:
        return f"{checkpoint.parent.parent.name}-{checkpoint.stem}"
    return checkpoint.stem


__all__ = ["CHECKPOINT_ENV", "WORK_ENV", "Workspace", "default_work_folder", "is_converted_folder"]

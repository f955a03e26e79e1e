"""The work folder: where the notebooks write (never into the checkout), and ``settings.json`` in it, which
remembers the checkpoint last chosen and the folder each checkpoint was converted into, so a choice made in
one notebook is offered by the others.

The folder is ``$CHCLIP_WORK``, else ``~/chclip-convert-work``. ``$CHCLIP_CHECKPOINT`` (set by
``scripts/run.sh CHECKPOINT``) counts as chosen when first seen, and a later pick wins; with no choice, the
notebooks use the embedded demo, written into ``demo/`` of the work folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import html
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from chclip_convert.errors import ConversionError
from chclip_convert.files.preflight import converted_name, looks_converted
from chclip_convert.files.records import named_alone, read_report, recorded_source
from chclip_convert.names import DEMO_FILE
from chclip_convert.notebook.fonts import cjk_html

WORK_ENV = "CHCLIP_WORK"
CHECKPOINT_ENV = "CHCLIP_CHECKPOINT"
DEFAULT_WORK = "chclip-convert-work"
SETTINGS_FILE = "settings.json"
CONVERTED_DIR = "converted"
AVERAGED_DIR = "averaged"  # averages of chosen epochs (notebook 05)
DEMO_SUBDIR = "demo"
DEMO_RUN_SUBDIR = "demo-run"
DIGESTS = "digests"  # settings.json: checkpoint → the weights digest its folder's report recorded when remembered


def default_work_folder() -> Path:
    """``$CHCLIP_WORK``, else ``chclip-convert-work`` in the home folder."""
    given = os.environ.get(WORK_ENV)
    return Path(given).expanduser().absolute() if given else Path.home() / DEFAULT_WORK


class Workspace:
    """The work folder and its settings. Reading never fails: an unreadable settings file (or one of another
    shape) is reported and set aside (``settings.json.unreadable``) when new settings are written, never
    silently lost; writes are atomic and serialised, so notebooks open side by side cannot mix them up."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser().absolute() if root else default_work_folder()
        self.settings_path = self.root / SETTINGS_FILE

    def settings(self) -> dict:
        """The remembered settings, ``{}`` if none (or unreadable, with a warning naming the file)."""
        data, problem = self._read()
        if problem:
            warnings.warn(f"{self.settings_path}: unreadable settings ({problem}); starting afresh.", stacklevel=2)
        return data

    def remember(
        self, checkpoint: str | Path, converted: str | Path | None = None, *, environment: str = "", choose: bool = True
    ) -> None:
        """Record ``checkpoint`` as the current choice (unless ``choose`` is false) and, if given, the folder it was
        converted into (and the ``$CHCLIP_CHECKPOINT`` it came from). A settings file that cannot be written is
        reported (a warning naming it), never raised."""

        def change(data: dict) -> None:
            if choose:
                data["checkpoint"] = str(Path(checkpoint).absolute())
            if converted is not None:
                source = str(Path(checkpoint).absolute())
                data.setdefault("converted", {})[source] = str(Path(converted).absolute())
                digest = _recorded_digest(_record(Path(converted)))
                if digest:  # what tells this conversion from a later one into the same folder
                    data.setdefault(DIGESTS, {})[source] = digest
            if environment:
                data["environment"] = environment

        self._update(change)

    def remember_run(self, reference: str | Path, run: str | Path) -> None:
        """Record the training run chosen in ``05_training_run.ipynb``: its reference and its folder."""
        chosen = {"reference": str(Path(reference).absolute()), "folder": str(Path(run).absolute())}
        self._update(lambda data: data.update(run=chosen))

    def run(self) -> tuple[Path, Path, bool]:
        """The training run to look at — reference, run folder, whether it is the demo: the one chosen last
        if both still exist, else the embedded demo run."""
        chosen = self.settings().get("run")
        if isinstance(chosen, dict) and all(isinstance(chosen.get(k), str) for k in ("reference", "folder")):
            reference, folder = Path(chosen["reference"]), Path(chosen["folder"])
            if reference.exists() and folder.is_dir() and folder != self.root / DEMO_RUN_SUBDIR:
                return reference, folder, False
        reference, _ = self.demo_run()
        return reference, reference.parent, True

    def _update(self, change: Callable[[dict], None]) -> None:
        """Apply ``change`` to the settings and write them, under the lock; a file that cannot be written is
        reported (a warning naming it), never raised."""
        try:
            with self._locked():
                data, problem = self._read()
                if problem:
                    kept = self._set_aside()
                    warnings.warn(
                        f"{self.settings_path}: unreadable settings ({problem}), kept as {kept.name}.", stacklevel=2
                    )
                change(data)
                self._write(data)
        except OSError as error:
            warnings.warn(f"{self.settings_path}: cannot save the settings ({error.strerror or error}).", stacklevel=2)

    def checkpoint(self) -> tuple[Path, bool]:
        """The checkpoint to work on, and whether it is the demo: the one chosen last (if it still exists),
        else the embedded demo. A new ``$CHCLIP_CHECKPOINT`` counts as chosen when first seen, so a launcher's
        checkpoint opens everywhere and a later pick in any notebook still wins."""
        given = os.environ.get(CHECKPOINT_ENV)
        if given and self.settings().get("environment") != given:
            self.remember(Path(given).expanduser(), environment=given)
        remembered = self.settings().get("checkpoint")
        if remembered and not self.is_demo(Path(remembered)) and (Path(remembered).is_file() or given):
            return Path(remembered), False  # with the variable set, a missing file is shown as such
        return self.demo_checkpoint(), True

    def demo_checkpoint(self) -> Path:
        """The embedded demo checkpoint, written into ``demo/`` of the work folder if not there yet."""
        path = self.root / DEMO_SUBDIR / DEMO_FILE
        if path.is_file():
            return path
        from chclip_convert.conversion.demo import write_demo_checkpoint

        return write_demo_checkpoint(self.root / DEMO_SUBDIR)

    def demo_run(self) -> tuple[Path, list[Path]]:
        """The embedded demo training run (:func:`chclip_convert.conversion.demo.write_demo_run`) in ``demo-run/``
        of the work folder, written if not complete: its pretrained reference and its epoch files."""
        from chclip_convert.conversion.demo import demo_run_paths, write_demo_run

        folder = self.root / DEMO_RUN_SUBDIR
        reference, epochs = demo_run_paths(folder)
        if all(path.is_file() for path in [reference, *epochs]):
            return reference, epochs
        return write_demo_run(folder)

    def is_demo(self, checkpoint: Path) -> bool:
        return checkpoint.absolute() == (self.root / DEMO_SUBDIR / DEMO_FILE).absolute()

    def converted_folder(self, checkpoint: str | Path) -> Path | None:
        """The folder ``checkpoint`` was last converted into, if it is still there and its conversion report
        still names that checkpoint (a folder converted over since is not offered)."""
        checkpoint = str(Path(checkpoint).absolute())
        settings = self.settings()
        remembered = settings.get("converted", {}).get(checkpoint)
        if not remembered or not looks_converted(Path(remembered)):
            return None
        folder = Path(remembered)
        record = _record(folder)  # read once: another notebook may be converting into it
        if _source_named(folder, record) == checkpoint:
            return folder
        # A record made for sharing names a checkpoint that shares no folder with it but the root by its file name
        # alone (no path of this machine): the same conversion if the digest remembered for this checkpoint is the
        # one the report holds. A later conversion of another checkpoint of that name records another digest.
        digest = settings.get(DIGESTS, {}).get(checkpoint)
        same = named_alone(record) == Path(checkpoint).name and digest and digest == _recorded_digest(record)
        return folder if same else None

    def ensure_converted(self, checkpoint: str | Path) -> Path:
        """The folder ``checkpoint`` was converted into; if none, converted now into the work folder."""
        folder = self.converted_folder(checkpoint)
        if folder is None:
            from chclip_convert.conversion.pipeline import convert_checkpoint

            folder = self.new_output(checkpoint)
            convert_checkpoint(checkpoint, folder)
            self.remember(checkpoint, folder, choose=False)  # converted on the side: the user's choice stays
        return folder

    def output_for(self, checkpoint: str | Path) -> Path:
        """Where to convert ``checkpoint``: the folder it was converted into before, else a new one."""
        return self.converted_folder(checkpoint) or self.new_output(checkpoint)

    def new_output(self, checkpoint: str | Path) -> Path:
        """A folder to convert ``checkpoint`` into: ``converted/<name>-hf`` in the work folder, numbered
        (``-2``, ``-3``…) past folders that already hold something."""
        base = self.root / CONVERTED_DIR / converted_name(Path(checkpoint))
        candidate, number = base, 1
        while candidate.exists() and (candidate.is_file() or any(candidate.iterdir())):
            number += 1
            candidate = base.with_name(f"{base.name}-{number}")
        return candidate

    def header_html(self) -> str:
        """The line each notebook shows at its top (in a font for any Chinese of the work folder's path)."""
        return cjk_html(
            f"<b>Work folder</b> <code>{html.escape(str(self.root))}</code>: everything these notebooks write goes "
            f"here (set <code>{WORK_ENV}</code> to change it; <code>{CHECKPOINT_ENV}</code> chooses the checkpoint)."
        )

    def _read(self) -> tuple[dict, str]:
        """The settings and, if the file cannot be used, why."""
        try:
            data = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}, ""
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            return {}, str(error)
        converted = data.get("converted", {}) if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("checkpoint", ""), str)
            or not (isinstance(converted, dict) and all(isinstance(v, str) for v in converted.values()))
            or not _strings(data.get(DIGESTS, {}))
        ):
            return {}, "not the settings this tool writes"
        return data, ""

    def _set_aside(self) -> Path:
        """Move the unreadable settings file to ``settings.json.unreadable`` (numbered past earlier ones)."""
        kept, number = self.settings_path.with_name(f"{SETTINGS_FILE}.unreadable"), 1
        while kept.exists():
            number += 1
            kept = self.settings_path.with_name(f"{SETTINGS_FILE}.unreadable-{number}")
        self.settings_path.replace(kept)
        return kept

    def _write(self, data: dict) -> None:
        """Write through a temporary file of this writer's own, then rename it over the settings."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=f"{SETTINGS_FILE}.", suffix=".partial", dir=self.root)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            os.replace(partial, self.settings_path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the work folder's settings lock (one read-change-write at a time, across processes too)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{SETTINGS_FILE}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _record(folder: Path) -> dict:
    """The folder's ``conversion_report.json``, ``{}`` if it has none or it cannot be read (it names nothing)."""
    try:
        return read_report(folder) or {}
    except ConversionError:
        return {}


def _recorded_digest(record: dict) -> str | None:
    """The weights digest of the checkpoint a conversion report says its folder was converted from, if it says."""
    digest = record.get("source_weights_digest")
    return digest if isinstance(digest, str) else None


def _strings(mapping) -> bool:
    """Whether ``mapping`` is a dict of strings to strings, as the settings' maps are."""
    return isinstance(mapping, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


def converted_from(folder: Path) -> str | None:
    """The checkpoint a folder's ``conversion_report.json`` says it was converted from, if it says."""
    return _source_named(folder, _record(folder))


def _source_named(folder: Path, record: dict) -> str | None:
    """The absolute path of the checkpoint ``record`` (the folder's report) names as its source, if it names one."""
    source = recorded_source(folder, record)
    return str(source.absolute()) if source is not None else None


__all__ = ["CHECKPOINT_ENV", "WORK_ENV", "Workspace", "default_work_folder"]

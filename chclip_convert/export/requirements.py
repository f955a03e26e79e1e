"""The packages export needs beyond the core install, found without importing them."""

from __future__ import annotations

import importlib.util

from chclip_convert.errors import MissingExtraError

# onnxscript is what torch.onnx's exporter builds graphs with; onnx reads and writes the files (float16 too);
# onnxruntime runs, checks and quantizes them.
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = "pip install 'chclip-convert[export]'"


def missing_export_packages() -> list[str]:
    """The export packages that cannot be imported here, in ``EXPORT_PACKAGES`` order."""
    return [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]


def require_export_packages() -> None:
    """Raise :class:`MissingExtraError`, saying what to install, unless every export package is installed."""
    missing = missing_export_packages()
    if missing:
        raise MissingExtraError(
            f"exporting to ONNX needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed; install the export extra: {INSTALL_HINT}"
        )

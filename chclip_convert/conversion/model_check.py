"""The check of a conversion against transformers' ``ChineseCLIPModel``, remembered once it has passed.

The table gives every target name and shape without transformers; the meta-device model confirms them, which
catches a transformers release that names or shapes a tensor otherwise, and a shape only the model refuses.
Its import takes seconds, on two cores in the way of the weights, so a pass is remembered: an empty file named
by the transformers version and a digest of the targets' names and shapes, in ``$CHCLIP_CACHE/model-checks``
(default ``~/.cache/chclip-convert``). The same targets under the same transformers are not checked again;
another transformers release, or a checkpoint with any other name or shape, is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path

from chclip_convert.conversion.state_dict import ConversionPlan, TensorLike, confirm_plan
from chclip_convert.files.safetensors_writer import TensorSpec

CACHE_ENV = "CHCLIP_CACHE"


def cache_dir() -> Path:
    """``$CHCLIP_CACHE``, else ``chclip-convert`` in ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chclip-convert"


def passed_marker(specs: Iterable[TensorSpec]) -> Path:
    """The file that says the model accepted these targets under the installed transformers."""
    targets = sorted((name, list(shape)) for name, shape, _ in specs)
    digest = hashlib.sha256(json.dumps(targets).encode()).hexdigest()[:32]
    return cache_dir() / "model-checks" / f"transformers-{version('transformers')}-{digest}"


def check_against_model(
    plan: ConversionPlan, state_dict: dict[str, TensorLike], specs: list[TensorSpec], *, strict: bool, path=None
) -> None:
    """Confirm a table plan against the meta-device model (:func:`confirm_plan`, which raises as it does),
    unless the same targets passed under this transformers before.

    A cache that cannot be written is not an error: the check then runs each time.
    """
    marker = passed_marker(specs)
    if marker.is_file():
        return
    confirm_plan(plan, state_dict, strict=strict, path=path)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass

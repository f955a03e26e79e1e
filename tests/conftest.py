"""Fixtures every test folder shares: seeded cn_clip models saved as training does, the packaged photo, the
embedded demo checkpoint and a fresh notebook work folder. Helpers that tests import are in ``support``; the
browser tests' fixtures are in browser/conftest.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The notebooks (run by nbval and by Voila in the browser tests) write into their work folder: a fresh one per
# test run, never the user's. Its last name is the default's, so stored outputs sanitise to the same text.
os.environ["CHCLIP_WORK"] = str(Path(tempfile.mkdtemp(prefix="chclip-tests-")) / "chclip-convert-work")
# The conversions' record of the model checks passed: a fresh one per test run, so that each run checks the
# table against the installed transformers again, never trusting a record the user's conversions left.
os.environ["CHCLIP_CACHE"] = tempfile.mkdtemp(prefix="chclip-tests-cache-")


def pytest_configure(config):
    """Torch computes on one thread in the test process. The tests' tensors are small, and on a shared 2-core
    machine a second thread that waits for a busy core makes each operation slower, not faster (measured:
    tests/test_verify_breaks.py in 22 s against 52 s while other work ran; as in
    ``chclip_convert.tensor_stats.one_thread``). Only the order of float sums changes, which every tolerance here
    allows for. Processes the tests start (the command line, nbval's kernels, Voila) keep torch's default."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def demo_checkpoint(tmp_path) -> Path:
    """The embedded demo checkpoint (small and fast) with its vocab.txt beside it, in a folder of its own."""
    from chclip_convert.conversion.demo import write_demo_checkpoint

    return write_demo_checkpoint(tmp_path / "demo")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A notebook work folder of this test's own, with no checkpoint chosen through the environment."""
    from chclip_convert.notebook.workspace import Workspace

    monkeypatch.delenv("CHCLIP_CHECKPOINT", raising=False)
    return Workspace(tmp_path / "work")


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def reduced_models():
    """Architecture name → seeded cn_clip CLIP, each built on first use and kept for the session; the seed is the
    name's place in ``REDUCED`` (ViT-B-16: 0). Shared by every test that asks for it: use it, never change it."""
    from support.original import REDUCED, BuiltOnFirstUse, build_model

    return BuiltOnFirstUse(lambda name: build_model(REDUCED[name], seed=list(REDUCED).index(name)))


@pytest.fixture(scope="session")
def reduced_checkpoints(reduced_models, checkpoint_dir):
    """Architecture name → training checkpoint file (``module.`` keys, epoch, step, name), saved on first use."""
    from support.original import BuiltOnFirstUse, save, training_checkpoint

    return BuiltOnFirstUse(lambda name: save(training_checkpoint(reduced_models[name]), checkpoint_dir / f"{name}.pt"))


@pytest.fixture(scope="session")
def sample_image():
    """The real photograph the package ships for verification (no download)."""
    from chclip_convert.verification.model_outputs import sample_image as packaged

    return packaged()

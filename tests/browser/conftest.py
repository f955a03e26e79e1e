"""The browser tests' fixtures: Voila serves the notebooks on 127.0.0.1 from a work folder of its own, JupyterLab
serves a copy of them, and Debian's Chromium, driven by Playwright, opens them. Every test in this folder is marked
``browser``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support import ROOT
from support.browser import CHROMIUM_FLAGS, SERVER_LOGS, SHOTS
from support.project import free_port

SERVER_START_S = 120


def pytest_itemcollected(item):
    """Mark every test collected below this folder ``browser`` (deselect them with ``-m "not browser"``)."""
    item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def voila_work(tmp_path_factory) -> Path:
    """The work folder of the notebooks Voila serves: their own, so the choices the browser tests make never
    reach the notebooks nbval runs."""
    return tmp_path_factory.mktemp("voila-work") / "chclip-convert-work"


@pytest.fixture(scope="session")
def voila_url(tmp_path_factory, voila_work):
    """The address of a Voila server on the notebooks, started once for the session."""
    port = free_port()
    log = (tmp_path_factory.mktemp("voila") / "voila.log").open("w")
    command = [
        sys.executable, "-m", "voila", "notebooks", f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CHCLIP_WORK": str(voila_work)}
    env.pop("CHCLIP_CHECKPOINT", None)
    # From the checkout's root, where voila.json is: progressive rendering.
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    yield from _serving(server, f"http://127.0.0.1:{port}", log)


@pytest.fixture(scope="session")
def lab_url(tmp_path_factory):
    """The address of a JupyterLab server, started once for the session, on a copy of the notebooks (its saves and
    checkpoints never touch the checkout), with a work folder, settings and workspaces of its own, autosave off
    (as scripts/run.sh has it), and the application object exposed as ``window.jupyterapp`` for the tests."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    shutil.copytree(ROOT / "docs", root / "docs")  # the notebooks' stored pictures
    settings = root / "settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text('{"autosave": false}')
    port = free_port()
    command = [
        sys.executable, "-m", "jupyter", "lab", f"--port={port}", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.root_dir={root / 'notebooks'}", "--IdentityProvider.token=", "--ServerApp.password=",
        f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}",
        "--LabApp.expose_app_in_browser=True", "--ServerApp.allow_root=True",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CHCLIP_WORK": str(root / "chclip-convert-work")}
    env.pop("CHCLIP_CHECKPOINT", None)
    log = (root / "lab.log").open("w")
    server = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, env=env)
    yield from _serving(server, f"http://127.0.0.1:{port}", log)


def _serving(server: subprocess.Popen, url: str, log):
    """Wait until ``server`` answers on ``url``, yield the address, and stop the server at the end."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:  # poll the port until the server answers
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"the server exited early; see {log.name}")
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"the server did not answer on {url} within {SERVER_START_S} s; see {log.name}")
    SERVER_LOGS.append(Path(log.name))
    yield url
    SERVER_LOGS.remove(Path(log.name))
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def browser():
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed: scripts/test.sh installs it"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser page (its own context) 1300 × 1000 px, closed after the test."""
    yield from _page(browser, 1300, 1000)


@pytest.fixture
def laptop_page(browser):
    """A fresh browser page (its own context) at a laptop's 1400 × 900 px, closed after the test."""
    yield from _page(browser, 1400, 900)


def _page(browser, width: int, height: int):
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": width, "height": height})
    yield context.new_page()
    context.close()

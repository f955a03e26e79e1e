"""The browser tests' fixtures: Voila serves the notebooks on 127.0.0.1 from a work folder of its own, and Debian's
Chromium, driven by Playwright, opens them. Every test in this folder is marked ``browser``."""

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
from support.browser import CHROMIUM_FLAGS, SHOTS
from support.project import free_port

VOILA_START_S = 120


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
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + VOILA_START_S
    while time.monotonic() < deadline:  # poll the port until the server answers
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                pytest.fail(f"voila exited early; see {log.name}")
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail(f"voila did not answer on {url} within {VOILA_START_S} s; see {log.name}")
    yield url
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
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()

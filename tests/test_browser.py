"""The widget UI in a real browser: Voila serves the notebooks on 127.0.0.1 and Debian's Chromium, driven
by Playwright, types and clicks as a person would. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, free_port
from transformers import ChineseCLIPModel

from chclip_convert.demo import write_demo_checkpoint

SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Voila runs each notebook's cells before the page shows its widgets; the statistics notebook takes longest.
PAGE_TIMEOUT_MS = 180_000


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    port = free_port()
    log = (tmp_path_factory.mktemp("voila") / "voila.log").open("w")
    command = [
        sys.executable, "-m", "voila", "notebooks", f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("CHCLIP_CHECKPOINT", None)
    server = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
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
        pytest.fail(f"voila did not answer on {url} within 120 s; see {log.name}")
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
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
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    opened = context.new_page()
    yield opened
    context.close()


def open_notebook(page, url: str, name: str) -> None:
    page.goto(f"{url}/voila/render/{name}", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".jupyter-widgets", timeout=PAGE_TIMEOUT_MS)


def field(page, label: str):
    return page.locator(f".widget-text:has(label:text-is('{label}')) input")


def test_convert_in_the_browser(voila_url, page, tmp_path):
    checkpoint = write_demo_checkpoint(tmp_path / "mine")
    output = tmp_path / "converted-in-browser"
    open_notebook(page, voila_url, "01_convert.ipynb")
    page.screenshot(path=SHOTS / "01_convert_before.png", full_page=True)
    field(page, "Checkpoint").fill(str(checkpoint))
    field(page, "Output folder").fill(str(output))
    convert = page.locator("button:has-text('Convert')")
    page.wait_for_function("b => !b.disabled", arg=convert.element_handle(), timeout=30_000)
    convert.click()
    page.locator(f".widget-html:has-text('{output}')").wait_for(timeout=120_000)
    assert "OK: source keys" in page.locator(f".widget-html:has-text('{output}')").inner_text()
    page.locator(".progress-bar-success").wait_for(timeout=30_000)
    page.screenshot(path=SHOTS / "01_convert_after.png", full_page=True)
    model = ChineseCLIPModel.from_pretrained(output)
    assert model.config.vision_config.image_size == 64


def test_bad_path_shows_inline_message_and_keeps_convert_disabled(voila_url, page, tmp_path):
    open_notebook(page, voila_url, "01_convert.ipynb")
    field(page, "Checkpoint").fill(str(tmp_path / "no-such-checkpoint.pt"))
    page.locator("text=no such file").wait_for(timeout=30_000)
    assert page.locator("button:has-text('Convert')").is_disabled()
    page.screenshot(path=SHOTS / "01_convert_bad_path.png", full_page=True)


def test_inspector_shows_its_table(voila_url, page):
    open_notebook(page, voila_url, "02_inspect_keys.ipynb")
    table = page.locator("table:has-text('visual.adapter.weight')")
    table.wait_for(timeout=PAGE_TIMEOUT_MS)
    assert "unused" in table.inner_text() and "shape_mismatch" in table.inner_text()
    page.screenshot(path=SHOTS / "02_inspect_keys.png", full_page=True)


def test_statistics_notebook_shows_its_plots(voila_url, page):
    open_notebook(page, voila_url, "03_weight_stats.ipynb")
    plots = page.locator("img[src^='data:image/png']")
    plots.nth(2).wait_for(timeout=PAGE_TIMEOUT_MS)
    assert plots.count() >= 3
    page.screenshot(path=SHOTS / "03_weight_stats.png", full_page=True)

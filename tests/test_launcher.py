"""The README's first command: it installs (already done here, so it is quick), starts JupyterLab on
127.0.0.1 — also as root, as containers run — and serves the conversion notebook."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from support import ROOT
from support.project import free_port, readme_commands

pytestmark = pytest.mark.slow  # starts scripts/setup.sh and a JupyterLab server
START_TIMEOUT_S = 300  # scripts/setup.sh runs first; on a machine where it already ran, it returns at once


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_first_readme_command_serves_the_conversion_notebook(tmp_path: Path):
    run_command = readme_commands()[0]
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "CHCLIP_PORT": str(port), "JUPYTER_TOKEN": token, "HF_HUB_OFFLINE": "1"}
    env.pop("CHCLIP_CHECKPOINT", None)
    log_path = tmp_path / "jupyter.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            ["bash", "-c", run_command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        listing = None
        deadline = time.monotonic() + START_TIMEOUT_S
        while listing is None and time.monotonic() < deadline:
            assert server.poll() is None, f"the launcher exited ({server.returncode}):\n{log_path.read_text()}"
            try:
                listing = get_json(f"{base}/api/contents?token={token}")
            except OSError:
                time.sleep(0.5)
        assert listing is not None, f"no answer on {base} within {START_TIMEOUT_S} s:\n{log_path.read_text()}"
        assert "01_convert.ipynb" in {item["name"] for item in listing["content"]}
        notebook = get_json(f"{base}/api/contents/01_convert.ipynb?token={token}")
        assert notebook["type"] == "notebook" and notebook["content"]["cells"]
        with urllib.request.urlopen(f"{base}/lab/tree/01_convert.ipynb?token={token}", timeout=5) as page:
            assert page.status == 200 and b"JupyterLab" in page.read()
        # The address JupyterLab prints for the user opens the conversion notebook itself.
        assert f"{port}/lab/tree/01_convert.ipynb" in log_path.read_text()
    finally:
        if server.poll() is None:  # still serving: stop the launcher and the server it started
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

"""The browser tests' constants and page helpers (their fixtures are in tests/browser/conftest.py): Voila serves
the notebooks on 127.0.0.1 and Debian's Chromium, driven by Playwright, types and clicks as a person would."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout

from support import ROOT

SHOTS = ROOT / "artifacts" / "screenshots"
"""Where the browser tests save their screenshots."""
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Voila shows each cell's output as it runs (voila.json: progressive rendering), a placeholder until then; the
# statistics notebook takes longest.
PAGE_TIMEOUT_MS = 180_000
PENDING_CELL = ".voila-skeleton-container"  # Voila's placeholder of a cell that has not run yet
SERVER_LOGS: list[Path] = []
"""The log files of the servers the fixtures started: a page that does not finish shows their last lines."""


def open_notebook(page, url: str, name: str, *, timeout_ms: int = PAGE_TIMEOUT_MS) -> None:
    """Open notebook ``name`` as Voila renders it, and wait until every cell has run and its widgets show."""
    page.goto(f"{url}/voila/render/{name}", timeout=PAGE_TIMEOUT_MS)
    page.wait_for_selector(".jupyter-widgets", timeout=PAGE_TIMEOUT_MS)
    try:
        page.wait_for_selector(PENDING_CELL, state="detached", timeout=timeout_ms)
    except PlaywrightTimeout:
        pending = page.locator(PENDING_CELL).count()
        raise AssertionError(
            f"{name}: {pending} cell(s) still pending after {timeout_ms / 1000:.0f} s.\n"
            f"The page ends:\n{page.inner_text('body')[-1500:]}\n{server_log_tails()}"
        ) from None


def server_log_tails(lines: int = 40) -> str:
    """The last ``lines`` lines of each server's log, to show where a page that did not finish stood."""
    tails = []
    for log in SERVER_LOGS:
        text = log.read_text(errors="replace").splitlines()[-lines:] if log.exists() else ["(no log)"]
        tails.append(f"{log} ends:\n" + "\n".join(text))
    return "\n".join(tails)


def field(page, label: str):
    """The input of the text field labelled ``label``."""
    return page.locator(f".widget-text:has(label:text-is('{label}')) input")

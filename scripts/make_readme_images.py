"""Refresh the README's pictures from the browser tests' screenshots: the real pages, as Chromium shows them.
The notebooks that show one of these pictures beside their widgets (``notebook.picture``) get the new one too.

Usage: .venv/bin/python scripts/make_readme_images.py   (runs the browser tests; needs Debian's chromium)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from refresh_notebooks import NOTEBOOKS, store_pictures

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "artifacts" / "screenshots"
# README picture → the screenshot it is taken from.
PICTURES = {
    "app.png": "app_converted.png",
    "inspector.png": "02_inspect_keys.png",
    "weight_stats.png": "03_weight_stats.png",
    "save.png": "04_verify_and_save.png",
    "training_run.png": "05_heatmaps.png",
    "deploy.png": "06_exporter.png",
}


def browser_tests() -> list[str]:
    """The browser tests, in tests/browser/ or beside the others as tests/test_browser*.py."""
    found = [*(ROOT / "tests" / "browser").glob("test_*.py"), *(ROOT / "tests").glob("test_browser*.py")]
    return sorted(str(path) for path in found)


def main() -> None:
    tests = browser_tests()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT, check=True)
    for picture, shot in PICTURES.items():
        shutil.copyfile(SHOTS / shot, ROOT / "docs" / picture)
        print("docs/" + picture, "←", shot)
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        if store_pictures(notebook):
            print(notebook.relative_to(ROOT), "← its pictures")


if __name__ == "__main__":
    main()

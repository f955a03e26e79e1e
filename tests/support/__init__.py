"""What the tests share besides fixtures (those live in the conftest.py files), importable as ``support``:

- ``support.original``: seeded cn_clip models saved as training does, and cn_clip's own preprocessing and
  tokenizer for fixed inputs (needs cn_clip);
- ``support.converted``: a tiny ``ChineseCLIPConfig`` and strict checks of converted folders (transformers side);
- ``support.files``: digests of files and folders, and which pages of a tensor are in memory;
- ``support.project``: the checkout's README commands and free ports for the servers tests start;
- ``support.browser``: constants and page helpers of the browser tests (tests/browser/).

pytest puts tests/ on ``sys.path`` (``pythonpath`` in pyproject.toml), so every test file, in any folder, imports
``from support.<module> import ...``.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: pyproject.toml, README.md, notebooks/ and scripts/ are here."""

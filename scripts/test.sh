#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then lint and run every test: pytest over tests/ and, with nbval,
# every notebook in notebooks/ against its stored outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${CHCLIP_VENV:-.venv}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
    tests notebooks "$@"

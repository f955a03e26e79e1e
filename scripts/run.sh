#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then open the conversion notebook in JupyterLab.
# Usage: bash scripts/run.sh [CHECKPOINT.pt]   (without a checkpoint the notebook uses its embedded demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${CHCLIP_VENV:-.venv}"
if [ $# -gt 0 ]; then
    export CHCLIP_CHECKPOINT="$(realpath "$1")"
fi
exec "$VENV/bin/jupyter" lab notebooks/01_convert.ipynb --ip=127.0.0.1 --no-browser

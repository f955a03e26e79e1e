#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then serve the conversion UI as a page, without the notebook's code
# cells (Voila), on http://127.0.0.1:8866.
# Usage: bash scripts/app.sh [CHECKPOINT.pt]   (without a checkpoint the page starts on the embedded demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${CHCLIP_VENV:-.venv}"
if [ $# -gt 0 ]; then
    export CHCLIP_CHECKPOINT="$(realpath "$1")"
fi
exec "$VENV/bin/voila" notebooks/01_convert.ipynb --Voila.ip=127.0.0.1 --port=8866 --no-browser

#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then serve the converter as a page without code (Voila) on
# http://127.0.0.1:8866/voila/render/app.ipynb; its links open the other notebooks the same way.
# Usage: bash scripts/app.sh [CHECKPOINT.pt]   (without one, the page opens on the checkpoint chosen last, or the demo)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${CHCLIP_VENV:-.venv}"
if [ $# -gt 0 ]; then
    export CHCLIP_CHECKPOINT="$(realpath "$1")"
fi
echo "open http://127.0.0.1:8866/voila/render/app.ipynb"
exec "$VENV/bin/voila" notebooks --Voila.ip=127.0.0.1 --port=8866 --no-browser

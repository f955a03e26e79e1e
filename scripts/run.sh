#!/usr/bin/env bash
# Install everything (scripts/setup.sh), then open the conversion notebook in JupyterLab on 127.0.0.1.
# Usage: bash scripts/run.sh [CHECKPOINT.pt]   (without a checkpoint the notebook uses its embedded demo)
# CHCLIP_PORT chooses the port (default 8888; JupyterLab takes the next free one if it is busy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV="${CHCLIP_VENV:-.venv}"
if [ $# -gt 0 ]; then
    export CHCLIP_CHECKPOINT="$(realpath "$1")"
fi
extra=()
# Nothing lands in the checkout: JupyterLab's checkpoints go to the work folder, and autosave is off for this
# environment (Save writes a notebook when you ask).
WORK="$("$VENV/bin/python" -c 'from chclip_convert.notebook.workspace import default_work_folder as w; print(w())')"
mkdir -p "$WORK/.ipynb_checkpoints" "$VENV/share/jupyter/lab/settings"
echo '{"@jupyterlab/docmanager-extension:plugin": {"autosave": false}}' > "$VENV/share/jupyter/lab/settings/overrides.json"
extra+=(--FileCheckpoints.checkpoint_dir="$WORK/.ipynb_checkpoints")
# Containers run as root, and JupyterLab refuses root unless told: the server only listens on 127.0.0.1.
[ "$(id -u)" = 0 ] && extra+=(--allow-root)
# The server shows notebooks/; the address it prints opens the conversion notebook.
exec "$VENV/bin/jupyter" lab --ServerApp.root_dir=notebooks --LabApp.default_url=/lab/tree/01_convert.ipynb \
    --ip=127.0.0.1 --port="${CHCLIP_PORT:-8888}" --no-browser "${extra[@]}"

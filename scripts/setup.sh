#!/usr/bin/env bash
# Create .venv with everything the converter, the notebooks and the tests need. Safe to re-run: it does
# nothing when the environment already matches pyproject.toml and this script.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CHCLIP_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.setup-$(cat pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0

echo "setting up $VENV (torch, transformers, jupyter, cn_clip, onnxruntime) ..."
"$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }
# torch 2.14.1 with torchvision 0.29.1 is the pair that imports together on this platform; cn_clip needs both.
pip install "torch==2.14.1" "torchvision==0.29.1"
pip install -e ".[app,export,notebooks,test]"
# cn_clip pins lmdb==1.3.0, which has no wheel for Python > 3.10; importing cn_clip.clip needs only
# torch, torchvision, numpy, six and tqdm, all installed above.
pip install --no-deps "cn_clip==1.6.0"
"$VENV/bin/python" -c "import torch, torchvision, transformers, cn_clip.clip, ipywidgets, matplotlib, voila, playwright, onnx, onnxruntime, onnxscript" \
    || { echo "setup: the environment in $VENV does not import; see the pip output above" >&2; exit 1; }
touch "$stamp"

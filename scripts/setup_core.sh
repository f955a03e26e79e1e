#!/usr/bin/env bash
# Create .venv-core with the package alone, as a user installs it into a training environment:
# the CPU torch wheel and `pip install .` with no extras (no Jupyter, widgets, matplotlib, Pillow or cn_clip).
# The tests use it to prove that the core converts, verifies and reverses. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CHCLIP_CORE_VENV:-.venv-core}"
PYTHON="${PYTHON:-python3}"
stamp="$VENV/.setup-$(cat pyproject.toml scripts/setup_core.sh | sha1sum | cut -c1-12)-$(find chclip_convert -type f -not -name "*.pyc" | sort | xargs cat | sha1sum | cut -c1-12)"
[ -f "$stamp" ] && exit 0

echo "setting up $VENV (torch and the package alone) ..."
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored" || true; }
pip install "torch==2.13.0"
# Not editable: the package as a wheel built from this checkout, with no extras. setuptools builds in
# ./build; remove it afterwards unless it was there before.
had_build=0; [ -e build ] && had_build=1
pip install --no-cache-dir .
[ "$had_build" = 1 ] || rm -rf build
"$VENV/bin/python" -c "import chclip_convert.cli.main, transformers, blake3" \
    || { echo "setup_core: $VENV does not import; see the pip output above" >&2; exit 1; }
touch "$stamp"

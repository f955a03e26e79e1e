#!/usr/bin/env bash
# Install everything (scripts/setup.sh, and scripts/setup_core.sh for the package alone), then lint and run
# every test: pytest over tests/ and, with nbval, every notebook in notebooks/ against its stored outputs.
# All tiers run here, slow and browser tests included. While working, the fast tier takes a minute or two:
#   .venv/bin/python -m pytest -m "not slow and not browser"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup_core.sh
VENV="${CHCLIP_VENV:-.venv}"
# matplotlib's font cache names font files inside the venv that built it: one per venv, not one per user that a
# deleted checkout's venv leaves naming files that are gone (findfont warnings on stderr, which nbval fails on).
export MPLCONFIGDIR="$PWD/$VENV/matplotlib-config"
# The browser tests drive Debian's Chromium (test tools cannot download browsers here), with Debian's Noto Sans
# CJK so that their pictures show real characters where the notebooks send no font of their own (a path typed).
MISSING=()
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || MISSING+=(fonts-noto-cjk)
if [ ${#MISSING[@]} -gt 0 ]; then
    echo "installing Debian's ${MISSING[*]} for the browser tests ..."
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    --nbval --nbval-sanitize-with notebooks/nbval_sanitize.cfg \
    tests notebooks "$@"

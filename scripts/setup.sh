#!/usr/bin/env bash
# Creates .venv and installs dataversion with every extra, pinned by constraints.txt.
# torch==2.13.0 is installed first: a plain `torch` requirement would pull GBs of CUDA wheels.
# Idempotent: a venv whose stamp matches constraints.txt + pyproject.toml is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp_want=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.dataversion-stamp" 2>/dev/null)" = "$stamp_want" ]; then
  exit 0
fi
echo "setting up $VENV (one minute or two, once)..." >&2
"$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -c constraints.txt "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
$PIP install -c constraints.txt -e ".[all,dev,bench]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import dataversion, torch, apache_beam, feast" >/dev/null
echo "$stamp_want" > "$VENV/.dataversion-stamp"

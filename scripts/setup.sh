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
echo "setting up $VENV (a few minutes, once; log in $VENV/setup.log)..." >&2
"$PY" -m venv "$VENV"
LOG="$VENV/setup.log"
: > "$LOG"
pip_install() {
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" >> "$LOG" 2>&1; then
    echo "error: pip install $* failed; last lines of $LOG:" >&2
    grep -v "^WARNING: Location" "$LOG" | tail -n 30 >&2
    exit 1
  fi
}
pip_install --upgrade pip
pip_install -c constraints.txt "torch==2.13.0"
pip_install -c constraints.txt -e ".[all,dev,bench]"
# litdata (a loader peer for benchmarks/bench_loader_media.py) requires torchvision, whose
# PyPI builds do not import beside the CPU torch: install it and its own deps without it.
pip_install --no-deps -c constraints.txt litdata lightning-utilities obstore tifffile boto3 s3transfer
"$VENV/bin/python" -c "import dataversion, pipelines, torch, apache_beam, feast" >> "$LOG" 2>&1 || {
  echo "error: the installed packages do not import; see $LOG" >&2
  tail -n 20 "$LOG" >&2
  exit 1
}
echo "$stamp_want" > "$VENV/.dataversion-stamp"
echo "ready: $VENV" >&2

#!/usr/bin/env bash
# The README's test command: set up the environment, then run the whole test suite.
# Starts its own S3 server (SeaweedFS from PyPI) on loopback; nothing to start by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/system-packages.sh
exec .venv/bin/python -m pytest -q "$@"

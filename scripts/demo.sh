#!/usr/bin/env bash
# The README's "try it" command: set up, generate a messy sample corpus, ingest it into a
# repository on the local disk (the embedded default), then show what landed and what not.
# Everything lives under ./.demo; run it again to see an incremental, idempotent re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
DV=.venv/bin/dataversion
export DATAVERSION_REPO="file://$PWD/.demo/repo"
if [ ! -d .demo/raw ]; then
  .venv/bin/python examples/make_sample_data.py .demo/raw
fi
$DV init
echo "== ingest .demo/raw (Beam DirectRunner)"
$DV ingest .demo/raw --branch main
echo "== log"
$DV log
echo "== rejected inputs (first 10)"
$DV rejects main | head -n 10 || true   # head closes the pipe early
echo "== records of main (first 5)"
$DV ls main | head -n 5 || true
echo "== verify"
$DV verify --all
echo
echo "repository: $DATAVERSION_REPO  (try: export DATAVERSION_REPO=$DATAVERSION_REPO; .venv/bin/dataversion show main)"

#!/usr/bin/env bash
# External conformance suite: runs a real `ironflow serve` (SQLite and Postgres backends) and drives it with the
# official Python SDK (ironflow-py, pinned in tests/conformance/requirements.txt).
#
#   scripts/conformance.sh [extra pytest args]
#
# Environment:
#   IRONFLOW_BIN                 server binary to test; when unset, `cargo build --bin ironflow` and use
#                                target/debug/ironflow
#   IRONFLOW_TEST_DATABASE_URL   Postgres admin URL (default postgres://postgres@127.0.0.1:5432/postgres); each run
#                                creates and drops its own ironflow_conf_* databases. Unreachable Postgres FAILS.
#   PYTHON                       interpreter used to create the venv (default python3)
#
# Exits non-zero on any failure, error, or skipped test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SUITE="tests/conformance"
VENV="$SUITE/.venv"

if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$SUITE/requirements.txt"

if [ -z "${IRONFLOW_BIN:-}" ]; then
  cargo build --bin ironflow
  IRONFLOW_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironflow"
elif [[ "$IRONFLOW_BIN" == */* ]]; then
  IRONFLOW_BIN="$(cd "$(dirname "$IRONFLOW_BIN")" && pwd)/$(basename "$IRONFLOW_BIN")"
else
  IRONFLOW_BIN="$(command -v "$IRONFLOW_BIN")"
fi
if [ ! -x "$IRONFLOW_BIN" ]; then
  echo "conformance: server binary $IRONFLOW_BIN is missing or not executable" >&2
  exit 1
fi
export IRONFLOW_BIN
export IRONFLOW_TEST_DATABASE_URL="${IRONFLOW_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

# -rfEs lists failures, errors and skip reasons; conftest.py turns any skip into a failing exit status.
exec "$VENV/bin/python" -m pytest "$SUITE" -p no:cacheprovider -q -rfEs "$@"

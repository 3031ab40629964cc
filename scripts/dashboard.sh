#!/usr/bin/env bash
# The dashboard's suite: lint, type-check and unit-test the source, rebuild the bundle and fail if
# it differs from the committed dashboard/dist (the binary embeds dist/, so the two must not
# drift), then drive Debian's chromium against a real `ironflow serve` on SQLite and Postgres.
#
#   scripts/dashboard.sh            (IRONFLOW_BIN: the server binary; PYTHON: a venv with ironflow-py)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/dashboard"

command -v node >/dev/null 2>&1 || { echo "dashboard.sh: node is required (Debian: apt-get install nodejs npm)" >&2; exit 1; }
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "dashboard.sh: node 20 or later is required (found $(node --version))" >&2; exit 1; }
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || { echo "dashboard.sh: chromium is required at $CHROMIUM (Debian: apt-get install chromium)" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error
npm run --silent lint
npm run --silent typecheck
npm test --silent

npm run --silent build >/dev/null
if ! git -C "$ROOT" diff --quiet -- dashboard/dist || [ -n "$(git -C "$ROOT" status --porcelain -- dashboard/dist)" ]; then
  echo "dashboard.sh: dashboard/dist differs from a fresh build of dashboard/src; run 'npm run build' in dashboard/ and commit dist/" >&2
  git -C "$ROOT" status --short -- dashboard/dist >&2
  exit 1
fi
echo "dashboard: bundle matches the source ($(gzip -c dist/assets/*.js | wc -c) bytes of JS gzipped, $(gzip -c dist/assets/*.css | wc -c) of CSS)"

export IRONFLOW_BIN="${IRONFLOW_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironflow}"
export PYTHON="${PYTHON:-$ROOT/tests/conformance/.venv/bin/python}"
[ -x "$PYTHON" ] || { echo "dashboard.sh: no Python with ironflow-py at $PYTHON (scripts/conformance.sh creates it)" >&2; exit 1; }
export CHROMIUM
node e2e/run.mjs

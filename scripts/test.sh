#!/usr/bin/env bash
# Runs the whole test suite: Rust unit + integration tests (SQLite and Postgres) and the
# external conformance suite (ironflow-py 0.53.0 against a real `ironflow serve` on both backends),
# then the dashboard's suite (Vitest, the bundle check, Playwright + chromium on both backends).
#
#   scripts/test.sh
#
# Needs a Postgres server and pgbouncer (the pooler suite starts its own); IRONFLOW_TEST_DATABASE_URL is its admin URL (default
# postgres://postgres@127.0.0.1:5432/postgres). Every test creates and drops its own database.
# Exits non-zero if any test fails or if a required suite could not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export IRONFLOW_TEST_DATABASE_URL="${IRONFLOW_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if ! command -v psql >/dev/null 2>&1; then
  echo "test.sh: psql is required (Debian: apt-get install postgresql-client)" >&2
  exit 1
fi
if ! psql "$IRONFLOW_TEST_DATABASE_URL" -Atqc 'SELECT 1' >/dev/null 2>&1; then
  echo "test.sh: cannot reach Postgres at $IRONFLOW_TEST_DATABASE_URL — the Postgres suites are required" >&2
  exit 1
fi

if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  echo "test.sh: pgbouncer is required for the pooler suite (Debian: apt-get install pgbouncer)" >&2
  exit 1
fi

# The Rust suites run with a schema of their choosing set (--db-schema through IRONFLOW_DB_SCHEMA),
# the conformance suite with the default one (its servers do not inherit IRONFLOW_* variables).
echo "== Rust: unit, store and API tests (SQLite + Postgres, Postgres schema 'history')"
IRONFLOW_DB_SCHEMA=history cargo test --workspace --all-targets

echo "== Conformance: ironflow-py 0.53.0 against ironflow serve (SQLite + Postgres, default schema; PgBouncer)"
cargo build --bin ironflow
IRONFLOW_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironflow" scripts/conformance.sh

echo "== Dashboard: lint, types, unit tests, bundle check, browser tests (chromium; SQLite + Postgres)"
IRONFLOW_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/ironflow" scripts/dashboard.sh

echo "== all suites passed"

#!/usr/bin/env bash
# A longer chaos run than the one in the test suite: two `ironflow serve` nodes on one
# Postgres cluster of the test's own, SDK worker processes, servers and workers SIGKILLed and
# the database crash-restarted while events are emitted. Prints the figures as one JSON line:
# kills, database restarts, events acknowledged, runs by status, events lost, committed steps
# executed again, deadlocks.
#
#   scripts/chaos.sh [seconds]        # default 300
#
# Needs initdb / pg_ctl (Debian's postgresql package); the suite's own run is tests/chaos.rs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-300}"
cargo build --bin ironflow
IRONFLOW_CHAOS_SECS="$SECS" cargo test --test chaos -- --exact chaos_kills_servers_workers_and_the_database --nocapture 2>&1 \
  | tee /tmp/ironflow-chaos.log | grep -E '^chaos: |test result|panicked'

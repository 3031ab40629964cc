-- `ironflow bench`: the scratch table for the raw single-row commit rate (dropped afterwards).
CREATE TABLE IF NOT EXISTS ironflow_bench_raw (id INTEGER PRIMARY KEY AUTOINCREMENT, writer INTEGER NOT NULL, n INTEGER NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));

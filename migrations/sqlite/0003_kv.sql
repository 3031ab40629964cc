-- KV store: buckets with a per-bucket revision counter, and every revision of every key
-- (up to the bucket's `history` per key; tombstones are revisions too).

CREATE TABLE kv_buckets (
    env_id          TEXT NOT NULL REFERENCES environments (id),
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    ttl_seconds     BIGINT NOT NULL DEFAULT 0,
    max_value_size  BIGINT NOT NULL DEFAULT 0,
    max_bytes       BIGINT NOT NULL DEFAULT 0,
    history         INTEGER NOT NULL DEFAULT 1,
    revision        BIGINT NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (env_id, name)
);

CREATE TABLE kv_entries (
    env_id      TEXT NOT NULL,
    bucket      TEXT NOT NULL,
    key         TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    operation   TEXT NOT NULL CHECK (operation IN ('put', 'delete')),
    value       BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    PRIMARY KEY (env_id, bucket, revision),
    FOREIGN KEY (env_id, bucket) REFERENCES kv_buckets (env_id, name) ON DELETE CASCADE
);
CREATE INDEX kv_entries_key ON kv_entries (env_id, bucket, key, revision DESC);
CREATE INDEX kv_entries_expiry ON kv_entries (expires_at) WHERE expires_at IS NOT NULL;

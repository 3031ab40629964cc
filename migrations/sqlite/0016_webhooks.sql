-- Webhook sources: where a provider's deliveries come in (an ingest token, kept as its SHA-256
-- hash), how they are verified (secrets sealed with the master key, a previous secret with its
-- grace expiry, the signature scheme as JSON) and the events they become. Deliveries that passed
-- verification are listed with the slot that verified them.
CREATE TABLE webhook_sources (
    id                   TEXT PRIMARY KEY,
    env_id               TEXT NOT NULL REFERENCES environments (id),
    name                 TEXT NOT NULL,
    event_prefix         TEXT NOT NULL,
    verify_header        TEXT NOT NULL,
    verify_algorithm     TEXT NOT NULL,
    verify_config        TEXT,
    metadata             TEXT NOT NULL,
    schema_version       INTEGER NOT NULL CHECK (schema_version >= 1),
    secret_sealed        TEXT,
    prev_secret_sealed   TEXT,
    prev_expires_at      TEXT,
    ingest_token_hash    TEXT NOT NULL UNIQUE,
    ingest_token_prefix  TEXT NOT NULL,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL
);
CREATE INDEX webhook_sources_env ON webhook_sources (env_id, created_at);

CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    env_id           TEXT NOT NULL,
    source_id        TEXT NOT NULL,
    external_id      TEXT,
    status           TEXT NOT NULL,
    event_id         TEXT,
    error            TEXT,
    signature_key    TEXT NOT NULL,
    request_body     TEXT NOT NULL,
    request_headers  TEXT NOT NULL,
    created_at       TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_source ON webhook_deliveries (env_id, source_id, created_at);

-- Environment config documents (revisioned) and encrypted secrets.

CREATE TABLE configs (
    env_id      TEXT NOT NULL REFERENCES environments (id),
    name        TEXT NOT NULL,
    data        JSONB NOT NULL,
    revision    BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, name)
);

-- Values are AES-256-GCM ciphertext under IRONFLOW_MASTER_KEY (key_id names the key so keys
-- can rotate); the plaintext is never stored and never returned by the API.
CREATE TABLE secrets (
    env_id       TEXT NOT NULL REFERENCES environments (id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    ciphertext   BYTEA NOT NULL,
    nonce        BYTEA NOT NULL,
    key_id       TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, name)
);

-- Pub/sub messages: the durable copy of everything published to developer topics.

CREATE TABLE messages (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    env_id           TEXT NOT NULL REFERENCES environments (id),
    topic            TEXT NOT NULL,
    data             JSONB NOT NULL,
    idempotency_key  TEXT,
    published_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_topic ON messages (env_id, topic, seq);
CREATE UNIQUE INDEX messages_idempotency ON messages (env_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

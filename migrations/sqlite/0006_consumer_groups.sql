-- Consumer groups: named, durable subscriptions to developer topics whose members share the
-- messages (each delivered to one member at a time, at least once, until acked or terminated).

CREATE TABLE consumer_groups (
    id                  TEXT PRIMARY KEY,
    env_id              TEXT NOT NULL REFERENCES environments (id),
    name                TEXT NOT NULL,
    pattern             TEXT NOT NULL,
    filter_expr         TEXT NOT NULL DEFAULT '',
    ack_mode            TEXT NOT NULL,
    max_inflight        INTEGER NOT NULL,
    max_redeliveries    INTEGER NOT NULL,
    redeliver_delay_ms  INTEGER NOT NULL,
    metadata            TEXT NOT NULL,
    status              TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (env_id, name)
);

-- One row per (group, message) not yet acked. `state` is `pending` (deliverable from `due_at`),
-- `inflight` (with `consumer_id` and the `claim_token` of the claim that took it; redelivered after
-- `due_at` if not settled) or `dead`
-- (terminated, or out of redeliveries). Acked rows are deleted.
CREATE TABLE group_deliveries (
    group_id     TEXT NOT NULL REFERENCES consumer_groups (id) ON DELETE CASCADE,
    message_seq  INTEGER NOT NULL REFERENCES messages (seq),
    state        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    consumer_id  TEXT,
    due_at       TEXT NOT NULL,
    claim_token  TEXT,
    PRIMARY KEY (group_id, message_seq)
);
CREATE INDEX group_deliveries_due ON group_deliveries (group_id, state, due_at, message_seq);

-- Members currently joined (refreshed while they consume; stale rows are not counted).
CREATE TABLE group_members (
    group_id     TEXT NOT NULL REFERENCES consumer_groups (id) ON DELETE CASCADE,
    consumer_id  TEXT NOT NULL,
    seen_at      TEXT NOT NULL,
    PRIMARY KEY (group_id, consumer_id)
);

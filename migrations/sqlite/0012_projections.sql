-- Projections: their definitions, cursors and runner leases; per-partition state of managed
-- projections; archived definitions. SQLite has one writer, so events.seq (the rowid) is
-- already commit order (ARCHITECTURE invariant 35).

CREATE TABLE projections (
    env_id            TEXT NOT NULL,
    name              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    definition        TEXT NOT NULL,
    revision          BIGINT NOT NULL,
    status            TEXT NOT NULL,
    error_message     TEXT NOT NULL DEFAULT '',
    cursor_seq        BIGINT NOT NULL DEFAULT 0,
    cursor_event_id   TEXT,
    cursor_event_at   TEXT,
    redeliveries      INTEGER NOT NULL DEFAULT 0,
    delivered_seq     BIGINT NOT NULL DEFAULT 0,
    lease_token       TEXT,
    lease_epoch       BIGINT NOT NULL DEFAULT 0,
    lease_expires_at  TEXT,
    generation        BIGINT NOT NULL DEFAULT 1,
    rebuild           TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    PRIMARY KEY (env_id, name)
);

CREATE TABLE projection_states (
    env_id          TEXT NOT NULL,
    name            TEXT NOT NULL,
    generation      BIGINT NOT NULL,
    partition_key   TEXT NOT NULL,
    state           TEXT NOT NULL,
    last_event_seq  BIGINT NOT NULL,
    last_event_id   TEXT NOT NULL,
    last_event_at   TEXT,
    updated_at      TEXT NOT NULL,
    PRIMARY KEY (env_id, name, generation, partition_key)
);

CREATE TABLE projection_revisions (
    env_id         TEXT NOT NULL,
    name           TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    definition     TEXT,
    change_type    TEXT NOT NULL,
    change_reason  TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    recorded_at    TEXT NOT NULL,
    PRIMARY KEY (env_id, name, revision)
);
CREATE TRIGGER projection_revisions_no_update BEFORE UPDATE ON projection_revisions
BEGIN SELECT RAISE(ABORT, 'projection_revisions is append-only'); END;
CREATE TRIGGER projection_revisions_no_delete BEFORE DELETE ON projection_revisions
BEGIN SELECT RAISE(ABORT, 'projection_revisions is append-only'); END;

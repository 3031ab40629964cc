-- Event sourcing: entity streams (an event may belong to one entity's stream, at a version),
-- their snapshots, and event schemas with their archived revisions.

-- An entity event is an ordinary event with its stream and version. The unique key is what
-- makes optimistic concurrency safe: a version can be taken once, whatever races.
ALTER TABLE events ADD COLUMN entity_id TEXT;
ALTER TABLE events ADD COLUMN entity_type TEXT;
ALTER TABLE events ADD COLUMN entity_version BIGINT;
-- The run whose step appended or emitted the event (X-Ironflow-Run-ID), if any.
ALTER TABLE events ADD COLUMN emitted_by_run TEXT;
-- The hash of the schema the event was validated against ('' or NULL: not validated) and, under
-- enforcement 'warn', why it did not conform.
ALTER TABLE events ADD COLUMN schema_hash TEXT;
ALTER TABLE events ADD COLUMN schema_error TEXT;
CREATE UNIQUE INDEX events_entity_version ON events (env_id, entity_id, entity_version)
    WHERE entity_id IS NOT NULL;
CREATE INDEX events_emitted_by_run ON events (emitted_by_run) WHERE emitted_by_run IS NOT NULL;

-- One row per stream: its head (SQLite has one writer, so the check and the bump are one
-- decision per stream at a time).
CREATE TABLE streams (
    env_id       TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    entity_type  TEXT NOT NULL,
    version      BIGINT NOT NULL,
    event_count  BIGINT NOT NULL,
    deleted      BOOLEAN NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (env_id, entity_id)
);
CREATE INDEX streams_type ON streams (env_id, entity_type, entity_id);
CREATE INDEX streams_updated ON streams (env_id, updated_at);

CREATE TABLE stream_snapshots (
    id              TEXT PRIMARY KEY,
    env_id          TEXT NOT NULL,
    entity_id       TEXT NOT NULL,
    entity_type     TEXT NOT NULL,
    entity_version  BIGINT NOT NULL,
    state           TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX stream_snapshots_version ON stream_snapshots (env_id, entity_id, entity_version);

CREATE TABLE event_schemas (
    env_id       TEXT NOT NULL,
    event_name   TEXT NOT NULL,
    version      INTEGER NOT NULL,
    schema_json  TEXT NOT NULL,
    hash         TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (env_id, event_name, version)
);

CREATE TABLE event_schema_revisions (
    revision      INTEGER PRIMARY KEY AUTOINCREMENT,
    env_id        TEXT NOT NULL,
    event_name    TEXT NOT NULL,
    version       INTEGER NOT NULL,
    schema_json   TEXT NOT NULL,
    description   TEXT NOT NULL,
    change_type   TEXT NOT NULL CHECK (change_type IN ('updated', 'deleted')),
    change_reason TEXT NOT NULL,
    actor_id      TEXT NOT NULL,
    recorded_at   TEXT NOT NULL
);
CREATE INDEX event_schema_revisions_schema
    ON event_schema_revisions (env_id, event_name, version, revision);
CREATE TRIGGER event_schema_revisions_no_update BEFORE UPDATE ON event_schema_revisions
BEGIN SELECT RAISE(ABORT, 'schema revisions are append-only: UPDATE is not allowed'); END;
CREATE TRIGGER event_schema_revisions_no_delete BEFORE DELETE ON event_schema_revisions
BEGIN SELECT RAISE(ABORT, 'schema revisions are append-only: DELETE is not allowed'); END;

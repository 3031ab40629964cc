-- Projections: their definitions, cursors and runner leases; per-partition state of managed
-- projections; archived definitions. And the event sequence in transaction order.

-- events.seq is taken as (top-level transaction id << 16) + the event's place in its batch, so
-- seq order is transaction-id order, and every event with seq < (xmin << 16) of a snapshot
-- belongs to a transaction that has finished (ARCHITECTURE invariant 35). A sequence number
-- from nextval() is taken before commit and cannot promise that. Earlier events keep their
-- numbers: each transaction inserted fewer than 65 536 of them, so they sit below the new ones.
DO $$
BEGIN
    IF (SELECT COALESCE(MAX(seq), 0) FROM events) >= (pg_current_xact_id()::text::bigint << 16) THEN
        RAISE EXCEPTION 'events.seq is ahead of the transaction-ordered sequence; report this';
    END IF;
END $$;

CREATE TABLE projections (
    env_id            TEXT NOT NULL,
    name              TEXT NOT NULL,
    -- managed | external | sql
    kind              TEXT NOT NULL,
    -- The definition (JSON): events followed, partition key, description, SQL.
    definition        TEXT NOT NULL,
    -- The definition's revision: 1, 2, … each time it changes.
    revision          BIGINT NOT NULL,
    -- active | paused | error
    status            TEXT NOT NULL,
    error_message     TEXT NOT NULL DEFAULT '',
    -- The last event applied (seq 0: none yet).
    cursor_seq        BIGINT NOT NULL DEFAULT 0,
    cursor_event_id   TEXT,
    cursor_event_at   TIMESTAMPTZ,
    -- Streams opened at an unchanged cursor after events past it were delivered: the runner
    -- keeps failing the next event.
    redeliveries      INTEGER NOT NULL DEFAULT 0,
    delivered_seq     BIGINT NOT NULL DEFAULT 0,
    lease_token       TEXT,
    lease_epoch       BIGINT NOT NULL DEFAULT 0,
    lease_expires_at  TIMESTAMPTZ,
    -- The state generation readers see; a rebuild fills the next one and then swaps.
    generation        BIGINT NOT NULL DEFAULT 1,
    -- The running or last rebuild (JSON), if any.
    rebuild           TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, name)
);

CREATE TABLE projection_states (
    env_id          TEXT NOT NULL,
    name            TEXT NOT NULL,
    generation      BIGINT NOT NULL,
    partition_key   TEXT NOT NULL,
    state           JSONB NOT NULL,
    last_event_seq  BIGINT NOT NULL,
    last_event_id   TEXT NOT NULL,
    last_event_at   TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, name, generation, partition_key)
);

-- Definitions as they were before each change (ListProjectionHistory). Append-only.
CREATE TABLE projection_revisions (
    env_id         TEXT NOT NULL,
    name           TEXT NOT NULL,
    revision       BIGINT NOT NULL,
    definition     TEXT,
    change_type    TEXT NOT NULL,
    change_reason  TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, name, revision)
);
CREATE FUNCTION projection_revisions_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'projection_revisions is append-only';
END $$ LANGUAGE plpgsql;
CREATE TRIGGER projection_revisions_no_update BEFORE UPDATE OR DELETE ON projection_revisions
    FOR EACH ROW EXECUTE FUNCTION projection_revisions_append_only();

-- Appends take an advisory lock per stream, in key order, before their transaction's first
-- write: an advisory lock needs no transaction id, so the append that waited gets its id after
-- the one it waited for committed, and a stream's versions are in seq order too.
CREATE FUNCTION ironflow_lock_streams(keys BIGINT[]) RETURNS void AS $$
DECLARE
    k BIGINT;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
END $$ LANGUAGE plpgsql;

-- Foundation: tenancy, functions, events, runs, steps and the continuous history.
-- Every workload row carries env_id. Timestamps are timestamptz, payloads jsonb.

CREATE TABLE orgs (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE environments (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id),
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, name)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES orgs (id),
    project_id  TEXT NOT NULL REFERENCES projects (id),
    name        TEXT NOT NULL,
    key_prefix  TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'developer', 'viewer')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);

CREATE TABLE functions (
    env_id           TEXT NOT NULL REFERENCES environments (id),
    id               TEXT NOT NULL,
    name             TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
    version          INTEGER NOT NULL,
    definition       JSONB NOT NULL,
    definition_hash  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, id)
);
CREATE INDEX functions_active ON functions (env_id) WHERE status = 'active';

CREATE TABLE function_versions (
    env_id           TEXT NOT NULL REFERENCES environments (id),
    function_id      TEXT NOT NULL,
    version          INTEGER NOT NULL,
    definition       JSONB NOT NULL,
    definition_hash  TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, function_id, version)
);

CREATE TABLE events (
    seq              BIGSERIAL NOT NULL UNIQUE,
    id               TEXT PRIMARY KEY,
    env_id           TEXT NOT NULL REFERENCES environments (id),
    name             TEXT NOT NULL,
    data             JSONB NOT NULL,
    metadata         JSONB NOT NULL,
    source           TEXT NOT NULL,
    idempotency_key  TEXT,
    version          INTEGER NOT NULL DEFAULT 0,
    received_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX events_env_seq ON events (env_id, seq);
CREATE INDEX events_env_name_seq ON events (env_id, name, seq);
CREATE UNIQUE INDEX events_idempotency ON events (env_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE runs (
    seq                 BIGSERIAL NOT NULL UNIQUE,
    id                  TEXT PRIMARY KEY,
    env_id              TEXT NOT NULL REFERENCES environments (id),
    function_id         TEXT NOT NULL,
    function_version    INTEGER NOT NULL,
    event_id            TEXT REFERENCES events (id),
    status              TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed',
                            'cancelled', 'paused', 'waiting_for_capacity', 'waiting')),
    input               JSONB NOT NULL,
    output              JSONB,
    error               JSONB,
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    parent_run_id       TEXT,
    cancellation_cause  TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    started_at          TIMESTAMPTZ,
    ended_at            TIMESTAMPTZ
);
CREATE INDEX runs_env_seq ON runs (env_id, seq);
CREATE INDEX runs_env_function_seq ON runs (env_id, function_id, seq);
CREATE INDEX runs_env_status_seq ON runs (env_id, status, seq);
CREATE INDEX runs_event ON runs (event_id);

CREATE TABLE steps (
    run_id       TEXT NOT NULL REFERENCES runs (id),
    step_id      TEXT NOT NULL,
    env_id       TEXT NOT NULL REFERENCES environments (id),
    name         TEXT NOT NULL,
    step_type    TEXT NOT NULL,
    sequence     INTEGER NOT NULL,
    status       TEXT NOT NULL,
    output       JSONB,
    error        JSONB,
    attempt      INTEGER NOT NULL DEFAULT 0,
    started_at   TIMESTAMPTZ,
    ended_at     TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, step_id)
);

-- The continuous history: append-only, one global sequence.
CREATE TABLE history (
    seq          BIGSERIAL PRIMARY KEY,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    env_id       TEXT NOT NULL REFERENCES environments (id),
    kind         TEXT NOT NULL,
    run_id       TEXT,
    function_id  TEXT,
    event_id     TEXT,
    payload      JSONB NOT NULL
);
CREATE INDEX history_run ON history (run_id, seq) WHERE run_id IS NOT NULL;
CREATE INDEX history_env_seq ON history (env_id, seq);

CREATE FUNCTION history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'history is append-only: % is not allowed', TG_OP;
END;
$$;
CREATE TRIGGER history_no_update BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION history_is_append_only();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
    FOR EACH STATEMENT EXECUTE FUNCTION history_is_append_only();

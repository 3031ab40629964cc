-- Push mode: one circuit breaker per (environment, function, endpoint URL), shared by every node
-- on this database and kept across restarts. Transitions are written with their history entry.
-- state: closed (requests flow), open (no requests until open_until), half_open (one probe
-- request is in flight until open_until; after that another node may send the probe).
CREATE TABLE circuit_breakers (
    env_id             TEXT NOT NULL REFERENCES environments (id),
    function_id        TEXT NOT NULL,
    endpoint           TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    consecutive_fails  INTEGER NOT NULL DEFAULT 0,
    open_until         TIMESTAMPTZ,
    last_failure_at    TIMESTAMPTZ,
    last_error         TEXT,
    updated_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (env_id, function_id, endpoint)
);

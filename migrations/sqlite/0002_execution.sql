-- Durable execution: workers, the work queue (one row per unfinished run), event waits.

ALTER TABLE runs ADD COLUMN parent_step_id TEXT;
ALTER TABLE runs ADD COLUMN concurrency_key TEXT;

CREATE TABLE workers (
    env_id             TEXT NOT NULL REFERENCES environments (id),
    id                 TEXT NOT NULL,
    hostname           TEXT NOT NULL,
    function_ids       TEXT NOT NULL,
    max_concurrent     INTEGER NOT NULL,
    labels             TEXT NOT NULL,
    version            TEXT NOT NULL,
    registered_at      TEXT NOT NULL,
    last_heartbeat_at  TEXT NOT NULL,
    PRIMARY KEY (env_id, id)
);

-- seq is the run's seq: first created, first served.
-- state: queued (claimable from due_at), leased (a worker has it until lease_expires_at),
-- parked (waiting for an event or a child run until due_at), blocked (over its concurrency limit).
CREATE TABLE jobs (
    seq                BIGINT NOT NULL,
    run_id             TEXT PRIMARY KEY REFERENCES runs (id),
    env_id             TEXT NOT NULL REFERENCES environments (id),
    function_id        TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'parked', 'blocked')),
    due_at             TEXT NOT NULL,
    execution_seq      BIGINT NOT NULL DEFAULT 0,
    dispatch_id        TEXT UNIQUE,
    lease_token        TEXT,
    worker_id          TEXT,
    lease_expires_at   TEXT,
    concurrency_key    TEXT NOT NULL DEFAULT '',
    concurrency_limit  INTEGER NOT NULL DEFAULT 0,
    -- The run fails if it has not ended by then (function timeout, counted from first dispatch).
    timeout_at         TEXT,
    created_at         TEXT NOT NULL
);
-- Exactly the claim query's predicates, so claiming reads only due work.
CREATE INDEX jobs_claimable ON jobs (env_id, due_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_expired_leases ON jobs (env_id, lease_expires_at) WHERE state = 'leased';
CREATE INDEX jobs_parked_timers ON jobs (due_at) WHERE state = 'parked';
CREATE INDEX jobs_timeouts ON jobs (timeout_at) WHERE timeout_at IS NOT NULL;
CREATE INDEX jobs_lane ON jobs (env_id, function_id, concurrency_key, seq);

CREATE TABLE waits (
    run_id       TEXT NOT NULL REFERENCES runs (id),
    step_id      TEXT NOT NULL,
    env_id       TEXT NOT NULL REFERENCES environments (id),
    event_name   TEXT NOT NULL,
    match_path   TEXT,
    match_value  TEXT,
    expires_at   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id)
);
CREATE INDEX waits_event ON waits (env_id, event_name);

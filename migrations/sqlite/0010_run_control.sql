-- Run control and history editing: paused jobs, pause requests, edited steps, and the one
-- sanctioned rewrite of the history (redaction).

-- A paused run keeps its job row (one job row per unfinished run) in state 'paused': nothing
-- claims it and no timer fires for it. `resume_state` is where a resume puts it back. SQLite
-- cannot alter a CHECK constraint, so the table is rebuilt (nothing references jobs).
CREATE TABLE jobs_new (
    seq                BIGINT NOT NULL,
    run_id             TEXT PRIMARY KEY REFERENCES runs (id),
    env_id             TEXT NOT NULL REFERENCES environments (id),
    function_id        TEXT NOT NULL,
    state              TEXT NOT NULL
                       CHECK (state IN ('queued', 'leased', 'parked', 'blocked', 'paused')),
    due_at             TEXT NOT NULL,
    execution_seq      BIGINT NOT NULL DEFAULT 0,
    dispatch_id        TEXT UNIQUE,
    lease_token        TEXT,
    worker_id          TEXT,
    lease_expires_at   TEXT,
    concurrency_key    TEXT NOT NULL DEFAULT '',
    concurrency_limit  INTEGER NOT NULL DEFAULT 0,
    timeout_at         TEXT,
    created_at         TEXT NOT NULL,
    resume_state       TEXT CHECK (resume_state IS NULL OR resume_state IN ('queued', 'parked', 'blocked'))
);
INSERT INTO jobs_new (seq, run_id, env_id, function_id, state, due_at, execution_seq, dispatch_id,
                      lease_token, worker_id, lease_expires_at, concurrency_key, concurrency_limit,
                      timeout_at, created_at)
SELECT seq, run_id, env_id, function_id, state, due_at, execution_seq, dispatch_id, lease_token,
       worker_id, lease_expires_at, concurrency_key, concurrency_limit, timeout_at, created_at
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_parked_timers ON jobs (due_at) WHERE state = 'parked';
CREATE INDEX jobs_timeouts ON jobs (timeout_at) WHERE timeout_at IS NOT NULL;
CREATE INDEX jobs_lane ON jobs (env_id, function_id, concurrency_key, seq);
CREATE INDEX jobs_claimable_by_function ON jobs (env_id, function_id, due_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'leased';
CREATE INDEX jobs_dispatch ON jobs (dispatch_id) WHERE dispatch_id IS NOT NULL;

ALTER TABLE runs ADD COLUMN pause_requested INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN pause_reason TEXT;
ALTER TABLE runs ADD COLUMN resume_from_step TEXT;

ALTER TABLE steps ADD COLUMN original_output TEXT;
ALTER TABLE steps ADD COLUMN patched_at TEXT;
ALTER TABLE steps ADD COLUMN patched_by TEXT;
ALTER TABLE steps ADD COLUMN injected INTEGER NOT NULL DEFAULT 0;

-- The history stays append-only except for redaction: an UPDATE may change only `payload`, and
-- only to a payload that carries a redaction marker; DELETE is always refused.
DROP TRIGGER history_no_update;
CREATE TRIGGER history_no_update BEFORE UPDATE ON history
WHEN NOT (NEW.seq = OLD.seq AND NEW.recorded_at = OLD.recorded_at AND NEW.env_id = OLD.env_id
          AND NEW.kind = OLD.kind AND NEW.run_id IS OLD.run_id
          AND NEW.function_id IS OLD.function_id AND NEW.event_id IS OLD.event_id
          AND instr(NEW.payload, '"$redacted":true') > 0)
BEGIN
    SELECT RAISE(ABORT, 'history is append-only: UPDATE is not allowed');
END;

-- Redacting an event finds the history entries that carry its data (few rows have an event id:
-- arrivals and run creations, never the per-step entries).
CREATE INDEX history_event ON history (event_id) WHERE event_id IS NOT NULL;

-- A function's history (ListFunctionHistory) without reading the environment's whole history.
CREATE INDEX history_function ON history (function_id, seq)
    WHERE kind IN ('function.registered', 'function.status_changed', 'function.rolled_back',
                   'function.deleted');

-- Run control and history editing: paused jobs, pause requests, edited steps, and the one
-- sanctioned rewrite of the history (redaction).

-- A paused run keeps its job row (one job row per unfinished run) in state 'paused': nothing
-- claims it and no timer fires for it. `resume_state` is where a resume puts it back (a sleep or
-- a wait that came due meanwhile fires then, from its unchanged due_at).
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_state_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('queued', 'leased', 'parked', 'blocked', 'paused'));
ALTER TABLE jobs ADD COLUMN resume_state TEXT
    CHECK (resume_state IS NULL OR resume_state IN ('queued', 'parked', 'blocked'));

ALTER TABLE runs ADD COLUMN pause_requested BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE runs ADD COLUMN pause_reason TEXT;
ALTER TABLE runs ADD COLUMN resume_from_step TEXT;

-- An edited step keeps what the worker recorded (`original_output`) and who edited it.
ALTER TABLE steps ADD COLUMN original_output JSONB;
ALTER TABLE steps ADD COLUMN patched_at TIMESTAMPTZ;
ALTER TABLE steps ADD COLUMN patched_by TEXT;
ALTER TABLE steps ADD COLUMN injected BOOLEAN NOT NULL DEFAULT false;

-- The history stays append-only except for redaction: an UPDATE may change only `payload`, and
-- only to a payload that carries a redaction marker; DELETE and TRUNCATE are always refused.
CREATE OR REPLACE FUNCTION history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.seq = OLD.seq AND NEW.recorded_at = OLD.recorded_at AND NEW.env_id = OLD.env_id
       AND NEW.kind = OLD.kind AND NEW.run_id IS NOT DISTINCT FROM OLD.run_id
       AND NEW.function_id IS NOT DISTINCT FROM OLD.function_id
       AND NEW.event_id IS NOT DISTINCT FROM OLD.event_id
       AND strpos(NEW.payload::text, '"$redacted": true') > 0 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'history is append-only: % is not allowed', TG_OP;
END;
$$;

-- Redacting an event finds the history entries that carry its data (few rows have an event id:
-- arrivals and run creations, never the per-step entries).
CREATE INDEX history_event ON history (event_id) WHERE event_id IS NOT NULL;

-- A function's history (ListFunctionHistory) without reading the environment's whole history.
CREATE INDEX history_function ON history (function_id, seq)
    WHERE kind IN ('function.registered', 'function.status_changed', 'function.rolled_back',
                   'function.deleted');

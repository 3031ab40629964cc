-- The hot path without per-row foreign-key checks. Each referencing insert ran a query and took a
-- KEY SHARE lock on its parent row (a WAL record per row), and every insert in every environment
-- locked the same `environments` row, so concurrent transactions turned its lock into MultiXacts.
-- The engine keeps these references itself: a run's steps, waits, job and history are written by
-- the transaction that holds the run's job row, and environments are never deleted while they
-- hold work. Tenancy, KV, config, secrets and consumer groups keep their keys (cold paths, and
-- their ON DELETE CASCADEs are behaviour).
ALTER TABLE events  DROP CONSTRAINT IF EXISTS events_env_id_fkey;
ALTER TABLE runs    DROP CONSTRAINT IF EXISTS runs_env_id_fkey,
                    DROP CONSTRAINT IF EXISTS runs_event_id_fkey;
ALTER TABLE steps   DROP CONSTRAINT IF EXISTS steps_run_id_fkey,
                    DROP CONSTRAINT IF EXISTS steps_env_id_fkey;
ALTER TABLE history DROP CONSTRAINT IF EXISTS history_env_id_fkey;
ALTER TABLE jobs    DROP CONSTRAINT IF EXISTS jobs_run_id_fkey,
                    DROP CONSTRAINT IF EXISTS jobs_env_id_fkey;
ALTER TABLE waits   DROP CONSTRAINT IF EXISTS waits_run_id_fkey,
                    DROP CONSTRAINT IF EXISTS waits_env_id_fkey;
ALTER TABLE messages DROP CONSTRAINT IF EXISTS messages_env_id_fkey;
ALTER TABLE group_deliveries DROP CONSTRAINT IF EXISTS group_deliveries_message_seq_fkey;

-- The queue table churns (every run inserts, claims, parks and deletes its row): room on each page
-- for a new row version, and vacuum and analyze after a fixed number of changes rather than a
-- fraction of a table whose size swings from empty to a backlog and back.
ALTER TABLE jobs SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);
ALTER TABLE waits SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 1000
);

-- Claims read each served function's own range of due work, so a backlog of another function's
-- runs (or of a function nobody serves) costs a claim nothing; the timer finds its next instants
-- from index ends instead of reading the queue.
CREATE INDEX jobs_claimable_by_function ON jobs (env_id, function_id, due_at, seq) WHERE state = 'queued';
DROP INDEX IF EXISTS jobs_claimable;
DROP INDEX IF EXISTS jobs_expired_leases;
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'leased';

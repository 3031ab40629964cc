-- Claims read each served function's own range of due work, so a backlog of another function's
-- runs (or of a function nobody serves) costs a claim nothing; the timer finds its next instants
-- from index ends instead of reading the queue. (Foreign keys stay on SQLite: each is one probe
-- of a parent's primary key in process, and the cold paths' ON DELETE CASCADEs need the pragma.)
CREATE INDEX jobs_claimable_by_function ON jobs (env_id, function_id, due_at, seq) WHERE state = 'queued';
DROP INDEX IF EXISTS jobs_claimable;
DROP INDEX IF EXISTS jobs_expired_leases;
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'leased';

-- Due work, oldest first; SKIP LOCKED lets many dispatchers claim at once. A claim reads the
-- queue in the order of its partial index (jobs_claimable), so it reads about $4 rows however
-- long the queue is. Expired leases are not claimed here: the timer turns each into a failed
-- attempt first (LEASE_EXPIRED), which queues the run again under its retry policy.
WITH allowed AS (
    -- The worker's functions ($2) of the dispatch mode ($7): pull workers get pull functions'
    -- jobs, the push dispatcher push functions' jobs.
    SELECT f.id FROM functions f
    WHERE f.env_id = $1
      AND f.id IN (SELECT jsonb_array_elements_text($2::jsonb))
      AND COALESCE(f.definition->>'mode', 'pull') = $7
), due AS (
    SELECT run_id
    FROM jobs
    WHERE env_id = $1 AND state = 'queued' AND due_at <= $3
      AND function_id = ANY(ARRAY(SELECT id FROM allowed))
    ORDER BY due_at, seq
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j
SET state = 'leased',
    execution_seq = j.execution_seq + 1,
    dispatch_id = j.run_id || '.' || (j.execution_seq + 1)::text,
    lease_token = md5(random()::text || clock_timestamp()::text),
    worker_id = $5,
    lease_expires_at = $6
FROM due
WHERE j.run_id = due.run_id
RETURNING j.run_id, j.dispatch_id, j.execution_seq, j.lease_token;

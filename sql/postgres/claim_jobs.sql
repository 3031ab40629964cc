-- Due work, oldest first. Each served function's jobs are read from its own range of the
-- jobs_claimable_by_function index (a backlog of other functions' work is never touched), at
-- most $4 of them, SKIP LOCKED so concurrent claimers pass each other; the oldest $4 of those
-- are claimed. Rows locked but not claimed are released at commit. Expired leases are not
-- claimed here: the timer turns each into a failed attempt first (LEASE_EXPIRED), which queues
-- the run again under its retry policy.
WITH allowed AS (
    -- The worker's functions ($2) of the dispatch mode ($7): pull workers get pull functions'
    -- jobs, the push dispatcher push functions' jobs.
    SELECT f.id FROM functions f
    WHERE f.env_id = $1
      AND f.id IN (SELECT jsonb_array_elements_text($2::jsonb))
      AND COALESCE(f.definition->>'mode', 'pull') = $7
), due AS (
    SELECT c.run_id
    FROM allowed a
    CROSS JOIN LATERAL (
        SELECT j.run_id, j.due_at, j.seq
        FROM jobs j
        WHERE j.env_id = $1 AND j.function_id = a.id AND j.state = 'queued' AND j.due_at <= $3
        ORDER BY j.due_at, j.seq
        LIMIT $4
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.due_at, c.seq
    LIMIT $4
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
RETURNING j.run_id, j.dispatch_id, j.execution_seq, j.lease_token, j.due_at,
    (SELECT f.definition FROM functions f WHERE f.env_id = j.env_id AND f.id = j.function_id) AS definition;

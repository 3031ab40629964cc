-- Due work and expired leases, oldest first; SKIP LOCKED lets many dispatchers claim at once.
WITH due AS (
    SELECT run_id
    FROM jobs
    WHERE env_id = $1
      AND function_id IN (SELECT jsonb_array_elements_text($2::jsonb))
      -- Pull workers get pull functions' jobs, the push dispatcher push functions' jobs ($7).
      AND function_id IN (SELECT f.id FROM functions f WHERE f.env_id = $1 AND COALESCE(f.definition->>'mode', 'pull') = $7)
      AND ((state = 'queued' AND due_at <= $3) OR (state = 'leased' AND lease_expires_at <= $3))
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

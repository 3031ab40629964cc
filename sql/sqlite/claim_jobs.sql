-- Due work, oldest first (one writer: no row locks needed), in the order of the
-- jobs_claimable_by_function index. Expired leases are not claimed here: the timer turns each into a
-- failed attempt first (LEASE_EXPIRED), which queues the run again under its retry policy.
UPDATE jobs
SET state = 'leased',
    execution_seq = execution_seq + 1,
    dispatch_id = run_id || '.' || (execution_seq + 1),
    lease_token = lower(hex(randomblob(16))),
    worker_id = ?5,
    lease_expires_at = ?6
WHERE run_id IN (
    SELECT run_id
    -- Named: with one deep queue ANALYZE says a function's range holds the whole queue, and
    -- SQLite 3.51 would rather scan every job (bloom-filtering by function) than probe it.
    FROM jobs INDEXED BY jobs_claimable_by_function
    WHERE env_id = ?1 AND state = 'queued' AND due_at <= ?3
      AND function_id IN (SELECT value FROM json_each(?2))
      -- Pull workers get pull functions' jobs, the push dispatcher push functions' jobs (?7).
      -- The unary + keeps this list from driving the index probe: it holds every function of
      -- the mode, and probing by it would walk other functions' queues (a deep backlog of a
      -- function nobody asked for) only to filter them out.
      AND +function_id IN (SELECT f.id FROM functions f WHERE f.env_id = ?1 AND COALESCE(json_extract(f.definition, '$.mode'), 'pull') = ?7)
    ORDER BY due_at, seq
    LIMIT ?4
)
RETURNING run_id, dispatch_id, execution_seq, lease_token, due_at,
    (SELECT f.definition FROM functions f WHERE f.env_id = jobs.env_id AND f.id = jobs.function_id) AS definition;

-- Jobs whose time came: a parked wait or invoke at its deadline, a run past its timeout, a
-- lease that expired (one writer: no row locks). The caller decides per row.
SELECT run_id, env_id, dispatch_id, state, execution_seq, lease_token, worker_id, lease_expires_at,
       due_at, timeout_at, function_id, concurrency_key, concurrency_limit
FROM jobs
WHERE (state = 'parked' AND due_at <= ?1)
   OR timeout_at <= ?1
   OR (state = 'leased' AND lease_expires_at <= ?1)
ORDER BY run_id
LIMIT ?2;

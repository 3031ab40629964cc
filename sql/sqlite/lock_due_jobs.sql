-- Jobs whose time came: a parked wait or invoke at its deadline, a run past its timeout, a
-- lease that expired (one writer: no row locks). The caller decides per row.
-- Each kind is read from its own partial index, named: those indexes are usually empty when
-- ANALYZE runs, and without their statistics the planner would rather walk the whole queue in
-- run_id order (the ORDER BY) than probe them. CROSS JOIN keeps the due ids the outer loop.
SELECT jobs.run_id, env_id, dispatch_id, state, execution_seq, lease_token, worker_id,
       lease_expires_at, due_at, timeout_at, function_id, concurrency_key, concurrency_limit
FROM (
    SELECT run_id FROM jobs INDEXED BY jobs_parked_timers WHERE state = 'parked' AND due_at <= ?1
    UNION
    SELECT run_id FROM jobs INDEXED BY jobs_timeouts WHERE timeout_at IS NOT NULL AND timeout_at <= ?1
    UNION
    SELECT run_id FROM jobs INDEXED BY jobs_lease_expiry
    WHERE state = 'leased' AND lease_expires_at <= ?1
) AS due
CROSS JOIN jobs ON jobs.run_id = due.run_id
ORDER BY jobs.run_id
LIMIT ?2;

-- The job rows a batch of reports names (a JSON array of dispatch ids); one writer: no row
-- locks to take. Through jobs_dispatch (see lock_report_facts).
SELECT run_id, env_id, dispatch_id, state, execution_seq, lease_token, worker_id, lease_expires_at,
       due_at, timeout_at, function_id, concurrency_key, concurrency_limit
FROM jobs INDEXED BY jobs_dispatch
WHERE dispatch_id IS NOT NULL AND dispatch_id IN (SELECT value FROM json_each(?1))
ORDER BY run_id;

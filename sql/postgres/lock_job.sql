-- A run's job row, locked before anything else of the run (the lock order every transaction
-- keeps: job rows first, in run order). No row: the run ended or does not exist.
SELECT run_id, env_id, dispatch_id, state, execution_seq, lease_token, worker_id, lease_expires_at,
       due_at, timeout_at, function_id, concurrency_key, concurrency_limit
FROM jobs
WHERE run_id = $1
FOR UPDATE;

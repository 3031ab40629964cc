-- The job rows a batch of reports names (a JSON array of dispatch ids), locked at once in run
-- order: the one order in which every transaction takes job rows, so two batches (or a batch
-- and a heartbeat, a cancel or the timer) cannot deadlock.
SELECT run_id, env_id, dispatch_id, state, execution_seq, lease_token, worker_id, lease_expires_at,
       due_at, timeout_at, function_id, concurrency_key, concurrency_limit
FROM jobs
WHERE dispatch_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
ORDER BY run_id
FOR UPDATE;

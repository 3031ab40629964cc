-- The job rows a batch of reports names (a JSON array of dispatch ids), locked at once in run
-- order (the lock order every transaction keeps), with what the lifecycle decisions need of
-- their runs and the runs' function definitions: every fact of a batch in one round trip.
SELECT j.run_id, j.env_id, j.dispatch_id, j.state, j.execution_seq, j.lease_token, j.worker_id,
       j.lease_expires_at, j.due_at, j.timeout_at, j.function_id, j.concurrency_key,
       j.concurrency_limit, r.status, r.attempt, r.max_attempts, r.input, r.parent_run_id,
       r.parent_step_id, r.event_id, r.pause_requested, r.created_at AS run_created_at, f.definition
FROM jobs j
JOIN runs r ON r.id = j.run_id
LEFT JOIN functions f ON f.env_id = r.env_id AND f.id = r.function_id
WHERE j.dispatch_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
ORDER BY j.run_id
FOR UPDATE OF j;

-- The job rows a batch of reports names (a JSON array of dispatch ids), with what the lifecycle
-- decisions need of their runs and the runs' function definitions (one writer: no row locks).
-- Through jobs_dispatch (migration 0009): the UNIQUE index's statistics count every queued
-- job's NULL dispatch_id as one value, so with a deep queue the planner would scan jobs.
SELECT j.run_id, j.env_id, j.dispatch_id, j.state, j.execution_seq, j.lease_token, j.worker_id,
       j.lease_expires_at, j.due_at, j.timeout_at, j.function_id, j.concurrency_key,
       j.concurrency_limit, r.status, r.attempt, r.max_attempts, r.input, r.parent_run_id,
       r.parent_step_id, r.event_id, r.pause_requested, r.created_at AS run_created_at, f.definition
FROM jobs j INDEXED BY jobs_dispatch
JOIN runs r ON r.id = j.run_id
LEFT JOIN functions f ON f.env_id = r.env_id AND f.id = r.function_id
WHERE j.dispatch_id IS NOT NULL AND j.dispatch_id IN (SELECT value FROM json_each(?1))
ORDER BY j.run_id;

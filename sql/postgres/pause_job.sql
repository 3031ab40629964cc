-- A held job: neither claimable nor timed (its lease and run timeout dropped); a resume puts it
-- back in `resume_state` with this due instant.
UPDATE jobs
SET state = 'paused', resume_state = $2, due_at = $3, lease_token = NULL, worker_id = NULL,
    lease_expires_at = NULL, timeout_at = NULL
WHERE run_id = $1;

UPDATE jobs
SET state = 'parked', due_at = $2, lease_token = NULL, worker_id = NULL, lease_expires_at = NULL
WHERE run_id = $1;

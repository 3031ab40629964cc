UPDATE steps
SET status = $3, output = $4, error = $5, ended_at = $6, updated_at = $6
WHERE run_id = $1 AND step_id = $2;

SELECT run_id, step_id, name, step_type, sequence, status, output, error, attempt,
       started_at, ended_at, created_at, updated_at
FROM steps
WHERE run_id = $1 AND status IN ('completed', 'failed')
ORDER BY sequence, created_at;

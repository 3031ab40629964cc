SELECT run_id, step_id, name, step_type, sequence, status, output, error, attempt,
       started_at, ended_at, created_at, updated_at, original_output, patched_at, patched_by, injected
FROM steps
WHERE run_id = $1 AND step_id = $2;

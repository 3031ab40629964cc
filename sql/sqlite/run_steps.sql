SELECT run_id, step_id, name, step_type, sequence, status, output, error, attempt,
       started_at, ended_at, created_at, updated_at, original_output, patched_at, patched_by, injected
FROM steps
WHERE env_id = ?1 AND run_id = ?2
ORDER BY sequence, created_at;

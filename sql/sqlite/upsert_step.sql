INSERT INTO steps (run_id, step_id, env_id, name, step_type, sequence, status, output, error, attempt,
                   started_at, ended_at, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)
ON CONFLICT (run_id, step_id) DO UPDATE
SET status = excluded.status, output = excluded.output, error = excluded.error, attempt = excluded.attempt,
    started_at = excluded.started_at, ended_at = excluded.ended_at, updated_at = excluded.updated_at;

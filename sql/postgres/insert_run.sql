INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input, max_attempts,
                  created_at, updated_at, parent_run_id, parent_step_id, concurrency_key, attempt)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, 1)
RETURNING seq;

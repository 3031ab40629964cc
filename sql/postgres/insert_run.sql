INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input, max_attempts, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9);

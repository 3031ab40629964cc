INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, concurrency_key, concurrency_limit, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?6);

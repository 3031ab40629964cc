INSERT INTO waits (run_id, step_id, env_id, event_name, match_path, match_value, expires_at, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (run_id, step_id) DO NOTHING;

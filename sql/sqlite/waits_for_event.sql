SELECT run_id, step_id, match_path, match_value
FROM waits
WHERE env_id = ?1 AND event_name = ?2
ORDER BY created_at;

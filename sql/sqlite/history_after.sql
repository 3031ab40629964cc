SELECT seq, recorded_at, env_id, kind, run_id, function_id, event_id, payload
FROM history
WHERE seq > ?1
ORDER BY seq
LIMIT ?2;

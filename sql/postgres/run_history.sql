SELECT seq, recorded_at, env_id, kind, run_id, function_id, event_id, payload
FROM history
WHERE env_id = $1 AND run_id = $2
ORDER BY seq;

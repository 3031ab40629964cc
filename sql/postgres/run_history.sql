-- A run's history, oldest first; with $3, only the entries recorded at or before it.
SELECT seq, recorded_at, env_id, kind, run_id, function_id, event_id, payload
FROM history
WHERE env_id = $1 AND run_id = $2 AND ($3::timestamptz IS NULL OR recorded_at <= $3)
ORDER BY seq;

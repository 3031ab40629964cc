-- The waits an event may satisfy, in run order (their runs' job rows are locked next, in
-- that order; the waits themselves are taken by the DELETE that resolves each).
SELECT run_id, step_id, match_path, match_value
FROM waits
WHERE env_id = $1 AND event_name = $2
ORDER BY run_id, created_at;

-- The payloads of a run's steps (one step when $2 is given), to redact.
SELECT step_id, output, error, original_output FROM steps
WHERE run_id = $1 AND ($2::text IS NULL OR step_id = $2)
ORDER BY sequence;

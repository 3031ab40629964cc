-- A run's history entries about the given steps (a JSON array of step ids).
SELECT seq, payload FROM history
WHERE run_id = ?1 AND json_extract(payload, '$.step_id') IN (SELECT value FROM json_each(?2))
ORDER BY seq;

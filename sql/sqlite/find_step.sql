-- A step to resume from, by its id or (its first occurrence) by its name.
SELECT step_id, sequence FROM steps
WHERE run_id = ?1 AND (step_id = ?2 OR name = ?2)
ORDER BY sequence
LIMIT 1;

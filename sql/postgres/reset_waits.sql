-- Waits of steps that were reset go with them.
DELETE FROM waits
WHERE run_id = $1 AND step_id NOT IN (SELECT s.step_id FROM steps s WHERE s.run_id = $1);

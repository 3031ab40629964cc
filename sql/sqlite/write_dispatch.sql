-- A claim's writes in one round trip: the dispatched runs (a JSON array of run ids, ?1) are
-- running and their sleeping steps over, and their `run.dispatched` entries are appended (a JSON
-- array as in history_many, ?3, in order), at ?2. (Three statements: SQLite has no
-- data-modifying WITH.)
UPDATE steps SET status = 'completed', ended_at = ?2, updated_at = ?2
WHERE run_id IN (SELECT value FROM json_each(?1)) AND status = 'sleeping';
UPDATE runs
SET status = 'running', started_at = COALESCE(started_at, ?2), updated_at = ?2
WHERE id IN (SELECT value FROM json_each(?1));
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT ?2, json_extract(value, '$.env_id'), json_extract(value, '$.kind'), json_extract(value, '$.run_id'),
       json_extract(value, '$.function_id'), json_extract(value, '$.event_id'), json_extract(value, '$.payload')
FROM json_each(?3)
ORDER BY CAST(key AS INTEGER);

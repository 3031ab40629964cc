-- Group commit of step checkpoints: their history entries in one statement, in report order
-- (a JSON array of {n, env_id, kind, run_id, payload}; payload is JSON text).
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT ?2, json_extract(value, '$.env_id'), json_extract(value, '$.kind'), json_extract(value, '$.run_id'),
       NULL, NULL, json_extract(value, '$.payload')
FROM json_each(?1)
ORDER BY CAST(key AS INTEGER);

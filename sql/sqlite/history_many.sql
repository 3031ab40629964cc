-- Appends several history entries in one statement, in the order given (a JSON array of
-- {env_id, kind, run_id, function_id, event_id, payload}; payload is JSON text).
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT ?2, json_extract(value, '$.env_id'), json_extract(value, '$.kind'), json_extract(value, '$.run_id'),
       json_extract(value, '$.function_id'), json_extract(value, '$.event_id'), json_extract(value, '$.payload')
FROM json_each(?1)
ORDER BY CAST(key AS INTEGER);

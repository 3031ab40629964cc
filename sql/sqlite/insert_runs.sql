-- New runs, in the order given (a JSON array of rows; input is JSON text): each run's sequence
-- is returned for its job row.
INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input, max_attempts,
                  created_at, updated_at, parent_run_id, parent_step_id, concurrency_key, attempt)
SELECT json_extract(value, '$.id'), json_extract(value, '$.env_id'), json_extract(value, '$.function_id'),
       json_extract(value, '$.function_version'), json_extract(value, '$.event_id'),
       json_extract(value, '$.status'), json_extract(value, '$.input'), json_extract(value, '$.max_attempts'),
       ?2, ?2, json_extract(value, '$.parent_run_id'), json_extract(value, '$.parent_step_id'),
       json_extract(value, '$.concurrency_key'), 1
FROM json_each(?1)
ORDER BY CAST(key AS INTEGER)
RETURNING id, seq;

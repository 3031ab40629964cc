-- New runs and their job rows in one round trip, in the order given (a JSON array of rows; input
-- is JSON text), at ?2; a throttled run's job is due at its not_before. Each job carries its run's sequence (first created, first served).
INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input, max_attempts,
                  created_at, updated_at, parent_run_id, parent_step_id, concurrency_key, attempt)
SELECT json_extract(value, '$.id'), json_extract(value, '$.env_id'), json_extract(value, '$.function_id'),
       json_extract(value, '$.function_version'), json_extract(value, '$.event_id'),
       json_extract(value, '$.status'), json_extract(value, '$.input'), json_extract(value, '$.max_attempts'),
       ?2, ?2, json_extract(value, '$.parent_run_id'), json_extract(value, '$.parent_step_id'),
       json_extract(value, '$.concurrency_key'), 1
FROM json_each(?1)
ORDER BY CAST(key AS INTEGER);
INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, concurrency_key, concurrency_limit,
                  created_at)
SELECT r.seq, r.id, r.env_id, r.function_id, json_extract(x.value, '$.job_state'),
       COALESCE(json_extract(x.value, '$.not_before'), ?2),
       json_extract(x.value, '$.lane_key'), json_extract(x.value, '$.lane_limit'), ?2
FROM json_each(?1) x
JOIN runs r ON r.id = json_extract(x.value, '$.id');

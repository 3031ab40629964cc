-- New runs, in the order given (a JSON array of rows; input is JSON text): each run's sequence
-- is returned for its job row.
INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input, max_attempts,
                  created_at, updated_at, parent_run_id, parent_step_id, concurrency_key, attempt)
SELECT x.id, x.env_id, x.function_id, x.function_version, x.event_id, x.status, x.input::jsonb,
       x.max_attempts, $2, $2, x.parent_run_id, x.parent_step_id, x.concurrency_key, 1
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id TEXT, env_id TEXT, function_id TEXT,
                                                 function_version INT, event_id TEXT, status TEXT,
                                                 input TEXT, max_attempts INT, parent_run_id TEXT,
                                                 parent_step_id TEXT, concurrency_key TEXT))
     WITH ORDINALITY AS x(id, env_id, function_id, function_version, event_id, status, input,
                          max_attempts, parent_run_id, parent_step_id, concurrency_key, n)
ORDER BY x.n
RETURNING id, seq;

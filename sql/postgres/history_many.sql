-- Appends several history entries in one statement, in the order given (a JSON array of
-- {env_id, kind, run_id, function_id, event_id, payload}; payload is JSON text).
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT $2, x.env_id, x.kind, x.run_id, x.function_id, x.event_id, x.payload::jsonb
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (env_id TEXT, kind TEXT, run_id TEXT, function_id TEXT,
                                                 event_id TEXT, payload TEXT))
     WITH ORDINALITY AS x(env_id, kind, run_id, function_id, event_id, payload, n)
ORDER BY x.n;

-- Group commit of step checkpoints: their history entries in one statement, in report order
-- (a JSON array of {n, env_id, kind, run_id, payload}; payload is JSON text).
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT $2, x.env_id, x.kind, x.run_id, NULL, NULL, x.payload::jsonb
FROM jsonb_to_recordset($1::jsonb) AS x(n INT, env_id TEXT, kind TEXT, run_id TEXT, payload TEXT)
ORDER BY x.n;

-- The job rows of new runs (a JSON array of rows), due now ($2).
INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, concurrency_key, concurrency_limit,
                  created_at)
SELECT x.seq, x.run_id, x.env_id, x.function_id, x.state, $2, x.concurrency_key, x.concurrency_limit, $2
FROM jsonb_to_recordset($1::jsonb) AS x(seq BIGINT, run_id TEXT, env_id TEXT, function_id TEXT, state TEXT,
                                        concurrency_key TEXT, concurrency_limit INT);

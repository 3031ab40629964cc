-- A checkpoint batch's writes in one statement: every step row (a JSON array as in
-- checkpoint_steps, $1) and every history entry (a JSON array as in history_many, $3, in order),
-- at $2. Two tables, so the parts cannot see or disturb each other.
WITH written_steps AS (
    INSERT INTO steps (run_id, step_id, env_id, name, step_type, sequence, status, output, error, attempt,
                       started_at, ended_at, created_at, updated_at)
    SELECT x.run_id, x.step_id, x.env_id, x.name, x.step_type, x.sequence, x.status, x.output::jsonb,
           x.error::jsonb, x.attempt, x.started_at, x.ended_at, $2, $2
    FROM jsonb_to_recordset($1::jsonb) AS x(run_id TEXT, step_id TEXT, env_id TEXT, name TEXT, step_type TEXT,
                                            sequence INT, status TEXT, output TEXT, error TEXT, attempt INT,
                                            started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ)
    ON CONFLICT (run_id, step_id) DO UPDATE
    SET status = excluded.status, output = excluded.output, error = excluded.error, attempt = excluded.attempt,
        started_at = excluded.started_at, ended_at = excluded.ended_at, updated_at = excluded.updated_at
    RETURNING 1
)
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT $2, x.env_id, x.kind, x.run_id, x.function_id, x.event_id, x.payload::jsonb
FROM ROWS FROM (jsonb_to_recordset($3::jsonb) AS (env_id TEXT, kind TEXT, run_id TEXT, function_id TEXT,
                                                 event_id TEXT, payload TEXT))
     WITH ORDINALITY AS x(env_id, kind, run_id, function_id, event_id, payload, n)
ORDER BY x.n;

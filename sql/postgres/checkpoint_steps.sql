-- Group commit of step checkpoints: every reported step in one statement (a JSON array of rows;
-- output and error are JSON text, absent when null).
INSERT INTO steps (run_id, step_id, env_id, name, step_type, sequence, status, output, error, attempt,
                   started_at, ended_at, created_at, updated_at)
SELECT x.run_id, x.step_id, x.env_id, x.name, x.step_type, x.sequence, x.status, x.output::jsonb,
       x.error::jsonb, x.attempt, x.started_at, x.ended_at, $2, $2
FROM jsonb_to_recordset($1::jsonb) AS x(run_id TEXT, step_id TEXT, env_id TEXT, name TEXT, step_type TEXT,
                                        sequence INT, status TEXT, output TEXT, error TEXT, attempt INT,
                                        started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ)
ON CONFLICT (run_id, step_id) DO UPDATE
SET status = excluded.status, output = excluded.output, error = excluded.error, attempt = excluded.attempt,
    started_at = excluded.started_at, ended_at = excluded.ended_at, updated_at = excluded.updated_at;

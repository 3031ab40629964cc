-- A batch of reports' writes in one statement, when they are only step rows, ended runs and
-- history (checkpoints and results, the hot path), at $2: the step rows ($1, as in
-- checkpoint_steps), the ended runs ($4, as in finish_runs) with their waits ($5) and job rows
-- ($6) removed (JSON arrays of run ids), then the history entries ($3, as in history_many, in
-- order). Each part writes its own table, so no part can see or disturb another.
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
), ended_runs AS (
    UPDATE runs r
    SET status = x.status, output = x.output::jsonb, error = x.error::jsonb, ended_at = $2, updated_at = $2
    FROM jsonb_to_recordset($4::jsonb) AS x(id TEXT, status TEXT, output TEXT, error TEXT)
    WHERE r.id = x.id
      -- The ids again as an index condition (see finish_runs).
      AND r.id = ANY(ARRAY(SELECT y->>'id' FROM jsonb_array_elements($4::jsonb) y))
    RETURNING 1
), removed_waits AS (
    DELETE FROM waits WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($5::jsonb)))
    RETURNING 1
), removed_jobs AS (
    DELETE FROM jobs WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($6::jsonb)))
    RETURNING 1
)
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT $2, x.env_id, x.kind, x.run_id, x.function_id, x.event_id, x.payload::jsonb
FROM ROWS FROM (jsonb_to_recordset($3::jsonb) AS (env_id TEXT, kind TEXT, run_id TEXT, function_id TEXT,
                                                 event_id TEXT, payload TEXT))
     WITH ORDINALITY AS x(env_id, kind, run_id, function_id, event_id, payload, n)
ORDER BY x.n;

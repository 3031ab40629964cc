-- New runs and their job rows in one statement, in the order given (a JSON array of rows; input
-- is JSON text), at $2; a throttled run's job is due at its not_before. Each job carries its run's sequence (first created, first served).
WITH x AS (
    SELECT * FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (
        id TEXT, env_id TEXT, function_id TEXT, function_version INT, event_id TEXT, status TEXT,
        input TEXT, max_attempts INT, parent_run_id TEXT, parent_step_id TEXT, concurrency_key TEXT,
        job_state TEXT, lane_key TEXT, lane_limit INT, not_before TIMESTAMPTZ))
    WITH ORDINALITY AS t(id, env_id, function_id, function_version, event_id, status, input,
                         max_attempts, parent_run_id, parent_step_id, concurrency_key, job_state,
                         lane_key, lane_limit, not_before, n)
), inserted AS (
    INSERT INTO runs (id, env_id, function_id, function_version, event_id, status, input, max_attempts,
                      created_at, updated_at, parent_run_id, parent_step_id, concurrency_key, attempt)
    SELECT x.id, x.env_id, x.function_id, x.function_version, x.event_id, x.status, x.input::jsonb,
           x.max_attempts, $2, $2, x.parent_run_id, x.parent_step_id, x.concurrency_key, 1
    FROM x
    ORDER BY x.n
    RETURNING id, seq
)
INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, concurrency_key, concurrency_limit,
                  created_at)
SELECT i.seq, x.id, x.env_id, x.function_id, x.job_state, COALESCE(x.not_before, $2), x.lane_key, x.lane_limit, $2
FROM inserted i JOIN x ON x.id = i.id;

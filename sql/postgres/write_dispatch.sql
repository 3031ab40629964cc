-- A claim's writes in one statement: the dispatched runs (a JSON array of run ids, $1) are
-- running and their sleeping steps over, and their `run.dispatched` entries are appended (a JSON
-- array as in history_many, $3, in order), at $2. Three tables, so the parts cannot see or
-- disturb each other.
WITH woken AS (
    UPDATE steps SET status = 'completed', ended_at = $2, updated_at = $2
    WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) AND status = 'sleeping'
    RETURNING 1
), started AS (
    UPDATE runs
    SET status = 'running', started_at = COALESCE(started_at, $2), updated_at = $2
    WHERE id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
    RETURNING 1
)
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT $2, x.env_id, x.kind, x.run_id, x.function_id, x.event_id, x.payload::jsonb
FROM ROWS FROM (jsonb_to_recordset($3::jsonb) AS (env_id TEXT, kind TEXT, run_id TEXT, function_id TEXT,
                                                 event_id TEXT, payload TEXT))
     WITH ORDINALITY AS x(env_id, kind, run_id, function_id, event_id, payload, n)
ORDER BY x.n;

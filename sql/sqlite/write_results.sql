-- A batch of reports' writes in one round trip, when they are only step rows, ended runs and
-- history (checkpoints and results, the hot path), at ?2: the step rows (?1, as in
-- checkpoint_steps), the ended runs (?4, as in finish_runs) with their waits (?5) and job rows
-- (?6) removed (JSON arrays of run ids), then the history entries (?3, as in history_many, in
-- order). (Five statements: SQLite has no data-modifying WITH.)
INSERT INTO steps (run_id, step_id, env_id, name, step_type, sequence, status, output, error, attempt,
                   started_at, ended_at, created_at, updated_at)
SELECT json_extract(value, '$.run_id'), json_extract(value, '$.step_id'), json_extract(value, '$.env_id'),
       json_extract(value, '$.name'), json_extract(value, '$.step_type'), json_extract(value, '$.sequence'),
       json_extract(value, '$.status'), json_extract(value, '$.output'), json_extract(value, '$.error'),
       json_extract(value, '$.attempt'), json_extract(value, '$.started_at'), json_extract(value, '$.ended_at'),
       ?2, ?2
FROM json_each(?1) WHERE true
ON CONFLICT (run_id, step_id) DO UPDATE
SET status = excluded.status, output = excluded.output, error = excluded.error, attempt = excluded.attempt,
    started_at = excluded.started_at, ended_at = excluded.ended_at, updated_at = excluded.updated_at;
UPDATE runs
SET status = json_extract(x.value, '$.status'), output = json_extract(x.value, '$.output'),
    error = json_extract(x.value, '$.error'), ended_at = ?2, updated_at = ?2
FROM json_each(?4) AS x
WHERE runs.id = json_extract(x.value, '$.id');
DELETE FROM waits WHERE run_id IN (SELECT value FROM json_each(?5));
DELETE FROM jobs WHERE run_id IN (SELECT value FROM json_each(?6));
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT ?2, json_extract(value, '$.env_id'), json_extract(value, '$.kind'), json_extract(value, '$.run_id'),
       json_extract(value, '$.function_id'), json_extract(value, '$.event_id'), json_extract(value, '$.payload')
FROM json_each(?3)
ORDER BY CAST(key AS INTEGER);

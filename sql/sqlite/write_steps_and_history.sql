-- A checkpoint batch's writes in one round trip: every step row (a JSON array as in
-- checkpoint_steps, ?1), then every history entry (a JSON array as in history_many, ?3, in
-- order), at ?2. (Two statements: SQLite has no data-modifying WITH.)
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
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
SELECT ?2, json_extract(value, '$.env_id'), json_extract(value, '$.kind'), json_extract(value, '$.run_id'),
       json_extract(value, '$.function_id'), json_extract(value, '$.event_id'), json_extract(value, '$.payload')
FROM json_each(?3)
ORDER BY CAST(key AS INTEGER);

-- A function's cron schedules made what its current definition says (?3: a JSON array of
-- {trigger_index, expression, next_at}); rows of triggers it no longer has are dropped.
DELETE FROM cron_schedules
WHERE env_id = ?1 AND function_id = ?2
  AND trigger_index NOT IN (SELECT json_extract(value, '$.trigger_index') FROM json_each(?3));
INSERT INTO cron_schedules (env_id, function_id, trigger_index, expression, function_version,
                            next_at, updated_at)
SELECT ?1, ?2, json_extract(value, '$.trigger_index'), json_extract(value, '$.expression'), ?4,
       json_extract(value, '$.next_at'), ?5
FROM json_each(?3) WHERE true
ON CONFLICT (env_id, function_id, trigger_index) DO UPDATE SET
    expression = excluded.expression, function_version = excluded.function_version,
    next_at = excluded.next_at, updated_at = excluded.updated_at;

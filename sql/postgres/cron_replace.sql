-- A function's cron schedules made what its current definition says ($3: a JSON array of
-- {trigger_index, expression, next_at}); rows of triggers it no longer has are dropped.
WITH wanted AS (
    SELECT * FROM jsonb_to_recordset($3::jsonb)
        AS x(trigger_index INT, expression TEXT, next_at TIMESTAMPTZ)
), dropped AS (
    DELETE FROM cron_schedules c
    WHERE c.env_id = $1 AND c.function_id = $2
      AND NOT EXISTS (SELECT 1 FROM wanted w WHERE w.trigger_index = c.trigger_index)
)
INSERT INTO cron_schedules (env_id, function_id, trigger_index, expression, function_version,
                            next_at, updated_at)
SELECT $1, $2, w.trigger_index, w.expression, $4, w.next_at, $5 FROM wanted w
ON CONFLICT (env_id, function_id, trigger_index) DO UPDATE SET
    expression = excluded.expression, function_version = excluded.function_version,
    next_at = excluded.next_at, updated_at = excluded.updated_at;

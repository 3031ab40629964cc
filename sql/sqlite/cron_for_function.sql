-- A function's cron schedules.
SELECT env_id, function_id, trigger_index, expression, function_version, next_at, last_tick_at
FROM cron_schedules WHERE env_id = ?1 AND function_id = ?2 ORDER BY trigger_index;

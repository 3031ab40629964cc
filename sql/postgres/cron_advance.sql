-- Moves a schedule past the tick it fired, only if nobody moved it since it was read.
UPDATE cron_schedules SET next_at = $5, last_tick_at = COALESCE($6, last_tick_at), updated_at = $7
WHERE env_id = $1 AND function_id = $2 AND trigger_index = $3 AND next_at = $4;

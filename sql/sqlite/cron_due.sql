-- Cron schedules whose tick came (at ?1), with whether their function is active; of live
-- environments only. Not locked: a tick is claimed by moving next_at (cron_advance).
SELECT c.env_id, c.function_id, c.trigger_index, c.expression, c.function_version, c.next_at,
       c.last_tick_at, (f.status = 'active') AS active
FROM cron_schedules c
JOIN environments v ON v.id = c.env_id AND v.deleted_at IS NULL
JOIN functions f ON f.env_id = c.env_id AND f.id = c.function_id
WHERE c.next_at <= ?1
ORDER BY c.next_at
LIMIT ?2;

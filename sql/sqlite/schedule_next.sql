-- The next instant a cron tick or a debounce comes due, over the rows the due queries can
-- fire (live environments, existing functions and events), so a row nothing can fire never
-- keeps the scheduler awake.
SELECT MIN(t) FROM (
    SELECT MIN(c.next_at) AS t FROM cron_schedules c
    JOIN environments v ON v.id = c.env_id AND v.deleted_at IS NULL
    JOIN functions f ON f.env_id = c.env_id AND f.id = c.function_id
    UNION ALL
    SELECT MIN(d.fires_at) FROM debounce_entries d
    JOIN environments v ON v.id = d.env_id AND v.deleted_at IS NULL
    JOIN events e ON e.id = d.event_id
) due;

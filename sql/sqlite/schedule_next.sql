-- The next instant a cron tick or a debounce comes due.
SELECT MIN(t) FROM (
    SELECT MIN(next_at) AS t FROM cron_schedules
    UNION ALL
    SELECT MIN(fires_at) FROM debounce_entries
) due;

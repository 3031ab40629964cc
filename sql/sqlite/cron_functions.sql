-- Functions whose current definition may have cron triggers (checked by the caller), of live
-- environments: what a start reconciles the schedules with.
SELECT f.env_id, f.id FROM functions f
JOIN environments v ON v.id = f.env_id AND v.deleted_at IS NULL
WHERE f.definition LIKE '%"cron"%'
UNION
SELECT env_id, function_id FROM cron_schedules;

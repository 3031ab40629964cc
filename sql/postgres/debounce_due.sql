-- Pending debounces that came due (at $1), oldest first, with the event each would start with;
-- of live environments only.
SELECT d.env_id, d.function_id, d.debounce_key, d.event_id, d.events, d.armed_at, d.fires_at,
       e.name AS event_name, e.data::text AS event_data
FROM debounce_entries d
JOIN environments v ON v.id = d.env_id AND v.deleted_at IS NULL
JOIN events e ON e.id = d.event_id
WHERE d.fires_at <= $1
ORDER BY d.fires_at
LIMIT $2;

-- The first event a projection follows after its cursor: how long it has waited.
SELECT seq, received_at
FROM events
WHERE env_id = ?1 AND name IN (SELECT value FROM json_each(?2)) AND seq > ?3
ORDER BY seq
LIMIT 1;

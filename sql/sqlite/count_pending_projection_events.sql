-- How many events a projection follows lie after its cursor (up to a seq, when given).
SELECT count(*)
FROM events
WHERE env_id = ?1 AND name IN (SELECT value FROM json_each(?2)) AND seq > ?3
  AND (?4 IS NULL OR seq <= ?4);

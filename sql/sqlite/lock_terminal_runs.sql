-- Terminal runs to delete, oldest first: by id (?2, a JSON array; empty = any), function,
-- statuses (?4, a JSON array; empty = every terminal one), created before ?5; at most ?6.
SELECT id FROM runs
WHERE env_id = ?1
  AND status IN ('completed', 'failed', 'cancelled')
  AND (json_array_length(?2) = 0 OR id IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR function_id = ?3)
  AND (json_array_length(?4) = 0 OR status IN (SELECT value FROM json_each(?4)))
  AND (?5 IS NULL OR created_at < ?5)
ORDER BY seq
LIMIT ?6;

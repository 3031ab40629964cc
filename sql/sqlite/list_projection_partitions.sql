-- The partitions with saved state, by key, optionally those containing a substring.
SELECT partition_key
FROM projection_states
WHERE env_id = ?1 AND name = ?2 AND generation = ?3 AND (?4 IS NULL OR partition_key LIKE ?4 ESCAPE '\')
ORDER BY partition_key
LIMIT ?5;

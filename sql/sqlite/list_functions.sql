SELECT env_id, id, status, version, definition, created_at, updated_at
FROM functions
WHERE env_id = ?1
  AND (?2 IS NULL OR status = ?2)
  AND (?3 IS NULL OR id > ?3)
ORDER BY id
LIMIT ?4;

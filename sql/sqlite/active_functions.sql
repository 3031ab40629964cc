SELECT env_id, id, status, version, definition, created_at, updated_at
FROM functions
WHERE env_id = ?1 AND status = 'active';

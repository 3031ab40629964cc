UPDATE functions
SET name = ?3, version = ?4, definition = ?5, definition_hash = ?6, updated_at = ?7
WHERE env_id = ?1 AND id = ?2;

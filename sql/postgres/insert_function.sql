INSERT INTO functions (env_id, id, name, status, version, definition, definition_hash, created_at, updated_at)
VALUES ($1, $2, $3, 'active', 1, $4, $5, $6, $6);

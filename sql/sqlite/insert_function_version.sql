INSERT INTO function_versions (env_id, function_id, version, definition, definition_hash, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6);

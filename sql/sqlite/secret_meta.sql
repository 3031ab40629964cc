SELECT name, description, revision, created_at, updated_at FROM secrets WHERE env_id = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY name;

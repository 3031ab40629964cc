UPDATE api_keys SET revoked_at = ?2
WHERE revoked_at IS NULL
  AND (env_id IN (SELECT value FROM json_each(?1)) OR project_id = ?3);

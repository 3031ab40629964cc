UPDATE api_keys SET revoked_at = $2
WHERE revoked_at IS NULL
  AND (env_id IN (SELECT value FROM jsonb_array_elements_text($1::jsonb)) OR project_id = $3);

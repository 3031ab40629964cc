UPDATE api_keys SET roles = ?3 WHERE org_id = ?1 AND id = ?2 AND revoked_at IS NULL;

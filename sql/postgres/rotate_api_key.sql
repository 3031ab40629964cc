UPDATE api_keys SET key_prefix = $3, key_hash = $4
WHERE org_id = $1 AND id = $2 AND revoked_at IS NULL;

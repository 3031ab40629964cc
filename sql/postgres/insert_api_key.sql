INSERT INTO api_keys (id, org_id, project_id, name, key_prefix, key_hash, role, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8);

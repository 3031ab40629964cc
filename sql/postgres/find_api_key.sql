SELECT k.id, k.org_id, k.project_id, k.env_id, k.name, k.key_prefix, k.roles, k.created_at,
       k.expires_at, k.last_used_at, o.name AS org_name, o.is_root
FROM api_keys k
JOIN orgs o ON o.id = k.org_id
JOIN projects p ON p.id = k.project_id
WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND o.deleted_at IS NULL AND p.deleted_at IS NULL;

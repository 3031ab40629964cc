SELECT u.id, u.org_id, u.email, u.name, u.roles, u.project_id, o.name AS org_name, o.is_root,
       s.expires_at
FROM user_sessions s
JOIN users u ON u.id = s.user_id
JOIN orgs o ON o.id = u.org_id
WHERE s.token_hash = $1 AND o.deleted_at IS NULL;

SELECT u.id, u.org_id, u.email, u.name, u.password_hash, u.roles, u.created_at, u.updated_at,
       u.last_login_at
FROM users u JOIN orgs o ON o.id = u.org_id
WHERE u.email = $1 AND o.deleted_at IS NULL;

SELECT id, org_id, email, name, password_hash, roles, created_at, updated_at, last_login_at
FROM users WHERE org_id = ?1 AND id = ?2;

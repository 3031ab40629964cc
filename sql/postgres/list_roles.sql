SELECT id, org_id, name, description, permissions, created_at, updated_at
FROM roles WHERE org_id = $1 ORDER BY created_at, id;

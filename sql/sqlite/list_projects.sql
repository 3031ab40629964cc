SELECT id, org_id, name, created_at, updated_at FROM projects
WHERE org_id = ?1 AND deleted_at IS NULL ORDER BY created_at, id;

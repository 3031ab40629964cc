SELECT id, project_id, name, created_at, updated_at
FROM environments
WHERE project_id = ?1 AND deleted_at IS NULL
ORDER BY (name = 'default') DESC, created_at, id
LIMIT 1;

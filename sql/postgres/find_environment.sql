SELECT id, project_id, name, created_at, updated_at
FROM environments
WHERE project_id = $1 AND (name = $2 OR id = $2) AND deleted_at IS NULL
ORDER BY (name = $2) DESC
LIMIT 1;

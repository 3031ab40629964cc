SELECT id, project_id, name
FROM environments
WHERE project_id = $1 AND (name = $2 OR id = $2)
ORDER BY (name = $2) DESC
LIMIT 1;

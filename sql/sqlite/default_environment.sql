SELECT e.id, e.project_id, e.name, e.created_at, e.updated_at
FROM environments e
JOIN projects p ON p.id = e.project_id
JOIN orgs o ON o.id = p.org_id
WHERE p.name = 'default' AND e.name = 'default' AND e.deleted_at IS NULL
ORDER BY o.created_at, o.id
LIMIT 1;

SELECT e.id, e.project_id, e.name, e.created_at, e.updated_at
FROM environments e JOIN projects p ON p.id = e.project_id
WHERE p.org_id = ?1 AND e.id = ?2 AND e.deleted_at IS NULL AND p.deleted_at IS NULL;

UPDATE projects SET name = ?3, updated_at = ?4 WHERE org_id = ?1 AND id = ?2 AND deleted_at IS NULL;

UPDATE roles SET name = ?3, description = ?4, permissions = ?5, updated_at = ?6
WHERE org_id = ?1 AND id = ?2;

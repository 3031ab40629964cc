UPDATE projects SET deleted_at = ?3, name = name || '~deleted~' || id
WHERE org_id = ?1 AND id = ?2 AND deleted_at IS NULL;

UPDATE environments SET deleted_at = ?2, name = name || '~deleted~' || id
WHERE id IN (SELECT value FROM json_each(?1)) AND deleted_at IS NULL;

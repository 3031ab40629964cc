UPDATE orgs SET deleted_at = $2, name = name || '~deleted~' || id WHERE id = $1 AND deleted_at IS NULL AND NOT is_root;

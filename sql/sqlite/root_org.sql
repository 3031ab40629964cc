SELECT id, name, is_root, created_at, updated_at FROM orgs WHERE is_root = 1 AND deleted_at IS NULL;

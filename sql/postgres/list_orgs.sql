SELECT id, name, is_root, created_at, updated_at FROM orgs WHERE deleted_at IS NULL
ORDER BY created_at, id;

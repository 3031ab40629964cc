INSERT INTO orgs (id, name, is_root, created_at, updated_at) VALUES ($1, $2, $3, $4, $4);

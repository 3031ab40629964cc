INSERT INTO users (id, org_id, email, name, password_hash, roles, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7);

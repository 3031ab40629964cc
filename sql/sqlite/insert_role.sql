INSERT INTO roles (id, org_id, name, description, permissions, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6);

INSERT INTO projects (id, org_id, name, created_at) VALUES (?1, ?2, ?3, ?4);

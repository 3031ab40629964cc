-- A new SQL projection at its first revision, active, with its cursor at the start.
INSERT INTO projections (env_id, name, kind, definition, revision, status, created_at, updated_at)
VALUES (?1, ?2, 'sql', ?3, ?4, 'active', ?5, ?5);

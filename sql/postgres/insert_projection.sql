-- A new projection at its first revision, active, with its cursor at the start.
INSERT INTO projections (env_id, name, kind, definition, revision, status, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 'active', $6, $6);

INSERT INTO configs (env_id, name, data, revision, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (env_id, name) DO UPDATE SET data = excluded.data, revision = excluded.revision, updated_at = excluded.updated_at;

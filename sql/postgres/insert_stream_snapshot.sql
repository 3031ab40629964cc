INSERT INTO stream_snapshots (id, env_id, entity_id, entity_type, entity_version, state, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7);

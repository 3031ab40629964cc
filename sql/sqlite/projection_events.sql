-- The next events a projection follows after its cursor, in seq order. SQLite's one writer
-- commits in rowid order, so every committed event is safe to pass (invariant 35).
SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
       entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error
FROM events
WHERE env_id = ?1 AND name IN (SELECT value FROM json_each(?2)) AND seq > ?3
ORDER BY seq
LIMIT ?4;

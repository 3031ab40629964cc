-- Events a rebuild replays: after its position, up to the projection's live cursor, in seq order.
SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
       entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error
FROM events
WHERE env_id = ?1 AND name IN (SELECT value FROM json_each(?2)) AND seq > ?3 AND seq <= ?4
ORDER BY seq
LIMIT ?5;

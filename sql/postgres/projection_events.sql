-- The next events a projection follows after its cursor, in seq order, and only those below the
-- snapshot's xmin: every transaction that could still add an event there has finished, so the
-- cursor can pass them and never skip one (invariant 35).
SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
       entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error
FROM events
WHERE env_id = $1 AND name IN (SELECT jsonb_array_elements_text($2::jsonb)) AND seq > $3
  AND seq < (pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 16)
ORDER BY seq
LIMIT $4;

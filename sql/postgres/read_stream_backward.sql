-- A stream's events down from version $3 (0: the head), newest first (within [$4, $5) when
-- given).
SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
       entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error
FROM events
WHERE env_id = $1 AND entity_id = $2 AND ($3::bigint = 0 OR entity_version <= $3)
  AND ($4::timestamptz IS NULL OR received_at >= $4)
  AND ($5::timestamptz IS NULL OR received_at < $5)
ORDER BY entity_version DESC
LIMIT $6::bigint;

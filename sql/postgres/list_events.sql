-- Newest first; keyset on seq. $4 is a JSON array of names.
SELECT seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
       entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error
FROM events
WHERE env_id = $1
  AND ($2::bigint IS NULL OR seq < $2)
  AND ($3::text IS NULL OR name = $3)
  AND ($4::jsonb IS NULL OR name IN (SELECT jsonb_array_elements_text($4::jsonb)))
  AND ($5::text IS NULL OR source = $5)
  AND ($6::timestamptz IS NULL OR received_at >= $6)
  AND ($7::timestamptz IS NULL OR received_at < $7)
  AND ($8::text IS NULL OR name ILIKE $8 ESCAPE '\' OR data::text ILIKE $8 ESCAPE '\')
ORDER BY seq DESC
LIMIT $9;

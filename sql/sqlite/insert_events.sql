-- Stores several events in one statement, in the order given (a JSON array of rows; data and
-- metadata are JSON text). Returns the id and sequence of each one stored: an event whose
-- idempotency key was seen before (earlier, or earlier in this array) is left out.
INSERT INTO events (id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
                    entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error, traceparent)
SELECT json_extract(value, '$.id'), json_extract(value, '$.env_id'), json_extract(value, '$.name'),
       json_extract(value, '$.data'), json_extract(value, '$.metadata'), json_extract(value, '$.source'),
       json_extract(value, '$.idempotency_key'), json_extract(value, '$.version'),
       json_extract(value, '$.received_at'), json_extract(value, '$.entity_id'),
       json_extract(value, '$.entity_type'), json_extract(value, '$.entity_version'),
       json_extract(value, '$.emitted_by_run'), json_extract(value, '$.schema_hash'),
       json_extract(value, '$.schema_error'), json_extract(value, '$.traceparent')
FROM json_each(?1) WHERE true
ORDER BY CAST(key AS INTEGER)
ON CONFLICT (env_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, seq;

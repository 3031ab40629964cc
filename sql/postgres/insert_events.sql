-- Stores several events in one statement, in the order given (a JSON array of rows; data and
-- metadata are JSON text). Returns the id and sequence of each one stored: an event whose
-- idempotency key was seen before (earlier, or earlier in this array) is left out. The seq is
-- the transaction id shifted by 16 bits plus the place in the array: transaction order, so a
-- reader below its snapshot's xmin has seen every event there will be (invariant 35).
INSERT INTO events (seq, id, env_id, name, data, metadata, source, idempotency_key, version, received_at,
                    entity_id, entity_type, entity_version, emitted_by_run, schema_hash, schema_error, traceparent)
SELECT (pg_current_xact_id()::text::bigint << 16) + x.n, x.id, x.env_id, x.name, x.data::jsonb, x.metadata::jsonb, x.source, x.idempotency_key, x.version,
       x.received_at, x.entity_id, x.entity_type, x.entity_version, x.emitted_by_run, x.schema_hash,
       x.schema_error, x.traceparent
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id TEXT, env_id TEXT, name TEXT, data TEXT,
                                                 metadata TEXT, source TEXT, idempotency_key TEXT,
                                                 version INT, received_at TIMESTAMPTZ,
                                                 entity_id TEXT, entity_type TEXT,
                                                 entity_version BIGINT, emitted_by_run TEXT,
                                                 schema_hash TEXT, schema_error TEXT,
                                                 traceparent TEXT))
     WITH ORDINALITY AS x(id, env_id, name, data, metadata, source, idempotency_key, version,
                          received_at, entity_id, entity_type, entity_version, emitted_by_run,
                          schema_hash, schema_error, traceparent, n)
ORDER BY x.n
ON CONFLICT (env_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, seq;

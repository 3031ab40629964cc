-- One version of a schema, locked (Postgres) until the transaction ends.
SELECT event_name, version, schema_json, hash, description, created_at, updated_at
FROM event_schemas WHERE env_id = $1 AND event_name = $2 AND version = $3 FOR UPDATE;

SELECT event_name, version, schema_json, hash, description, created_at, updated_at
FROM event_schemas WHERE env_id = ?1 AND event_name = ?2
ORDER BY version;

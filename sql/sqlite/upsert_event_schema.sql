INSERT INTO event_schemas (env_id, event_name, version, schema_json, hash, description, created_at,
                           updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
ON CONFLICT (env_id, event_name, version) DO UPDATE
SET schema_json = excluded.schema_json, hash = excluded.hash, description = excluded.description,
    updated_at = excluded.updated_at;

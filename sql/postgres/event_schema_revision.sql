SELECT revision, event_name, version, schema_json, description, change_type, change_reason, actor_id, recorded_at
FROM event_schema_revisions
WHERE env_id = $1 AND event_name = $2 AND version = $3 AND revision = $4;

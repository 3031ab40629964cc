-- Archived definitions of one version, newest first, below revision ?4 (NULL: all).
SELECT revision, event_name, version, schema_json, description, change_type, change_reason, actor_id, recorded_at
FROM event_schema_revisions
WHERE env_id = ?1 AND event_name = ?2 AND version = ?3
  AND (?4 IS NULL OR revision < ?4)
ORDER BY revision DESC
LIMIT ?5;

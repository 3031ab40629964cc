-- One archived change of a projection.
SELECT revision, definition, change_type, change_reason, actor_id, event_id, recorded_at
FROM projection_revisions
WHERE env_id = ?1 AND name = ?2 AND revision = ?3;

-- Archives a definition change: the definition as it was before (NULL for a creation).
INSERT INTO projection_revisions (env_id, name, revision, definition, change_type, change_reason, actor_id, event_id, recorded_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9);

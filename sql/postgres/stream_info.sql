-- A stream's head.
SELECT entity_id, entity_type, version, event_count, deleted, created_at, updated_at
FROM streams WHERE env_id = $1 AND entity_id = $2 AND version > 0;

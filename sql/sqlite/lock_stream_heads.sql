-- The head row of each stream (a JSON array), with a version-0 placeholder for a stream that has
-- none (SQLite's one writer already serialises appends).
INSERT INTO streams (env_id, entity_id, entity_type, version, event_count, deleted, created_at,
                     updated_at)
SELECT json_extract(value, '$.env_id'), json_extract(value, '$.entity_id'),
       json_extract(value, '$.entity_type'), 0, 0, 0, json_extract(value, '$.at'),
       json_extract(value, '$.at')
FROM json_each(?1) WHERE true
ORDER BY CAST(key AS INTEGER)
ON CONFLICT (env_id, entity_id) DO UPDATE SET version = streams.version
RETURNING env_id, entity_id, entity_type, version, deleted;

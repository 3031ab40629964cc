-- Locks the head row of each stream (a JSON array, sorted by environment and entity: the one
-- lock order), creating a version-0 placeholder for a stream that has none, and returns the
-- heads. A concurrent append to the same stream waits here until this transaction ends.
INSERT INTO streams (env_id, entity_id, entity_type, version, event_count, deleted, created_at,
                     updated_at)
SELECT x.env_id, x.entity_id, x.entity_type, 0, 0, false, x.at, x.at
FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (env_id TEXT, entity_id TEXT, entity_type TEXT,
                                                 at TIMESTAMPTZ))
     WITH ORDINALITY AS x(env_id, entity_id, entity_type, at, n)
ORDER BY x.n
ON CONFLICT (env_id, entity_id) DO UPDATE SET version = streams.version
RETURNING env_id, entity_id, entity_type, version, deleted;

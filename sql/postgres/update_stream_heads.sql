-- The new heads of the streams a batch appended to (a JSON array).
UPDATE streams s
SET entity_type = x.entity_type, version = x.version, event_count = s.event_count + x.added,
    deleted = x.deleted, updated_at = x.at
FROM jsonb_to_recordset($1::jsonb) AS x(env_id TEXT, entity_id TEXT, entity_type TEXT,
                                       version BIGINT, added BIGINT, deleted BOOLEAN,
                                       at TIMESTAMPTZ)
WHERE s.env_id = x.env_id AND s.entity_id = x.entity_id;

-- Placeholder heads (version 0) of streams whose every append was refused.
DELETE FROM streams s
USING jsonb_to_recordset($1::jsonb) AS x(env_id TEXT, entity_id TEXT)
WHERE s.env_id = x.env_id AND s.entity_id = x.entity_id AND s.version = 0;

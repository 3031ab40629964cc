SELECT count(*) FROM event_schemas
WHERE env_id = ?1 AND (?2 IS NULL OR event_name = ?2);

-- A page of schemas by name and version, each row with the count of all that match.
SELECT event_name, version, schema_json, hash, description, created_at, updated_at, count(*) OVER () AS total
FROM event_schemas
WHERE env_id = ?1 AND (?2 IS NULL OR event_name = ?2)
ORDER BY event_name, version
LIMIT ?3 OFFSET ?4;

-- Streams by entity id, a page at a time, each row with the count of all that match.
SELECT entity_id, entity_type, version, event_count, deleted, created_at, updated_at,
       count(*) OVER () AS total
FROM streams
WHERE env_id = ?1 AND version > 0
  AND (?2 IS NULL OR entity_type = ?2)
  AND (?3 IS NULL OR entity_id LIKE ?3 ESCAPE '\')
  AND (?4 OR NOT deleted)
ORDER BY entity_id
LIMIT ?5 OFFSET ?6;

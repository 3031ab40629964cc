-- How many streams match (for a page past the end).
SELECT count(*) FROM streams
WHERE env_id = ?1 AND version > 0
  AND (?2 IS NULL OR entity_type = ?2)
  AND (?3 IS NULL OR entity_id LIKE ?3 ESCAPE '\')
  AND (?4 OR NOT deleted);

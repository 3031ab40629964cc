-- How many streams match (for a page past the end).
SELECT count(*) FROM streams
WHERE env_id = $1 AND version > 0
  AND ($2::text IS NULL OR entity_type = $2)
  AND ($3::text IS NULL OR entity_id ILIKE $3 ESCAPE '\')
  AND ($4::boolean OR NOT deleted);

-- How many projections match (for a page past the end).
SELECT count(*)
FROM projections
WHERE env_id = $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR kind = $3);

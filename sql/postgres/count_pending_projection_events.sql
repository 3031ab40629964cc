-- How many events a projection follows lie after its cursor (up to a seq, when given).
SELECT count(*)
FROM events
WHERE env_id = $1 AND name IN (SELECT jsonb_array_elements_text($2::jsonb)) AND seq > $3
  AND ($4::bigint IS NULL OR seq <= $4);

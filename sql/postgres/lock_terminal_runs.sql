-- Terminal runs to delete, oldest first: by id ($2, a JSON array; empty = any), function,
-- statuses ($4, a JSON array; empty = every terminal one), created before $5; at most $6.
SELECT id FROM runs
WHERE env_id = $1
  AND status IN ('completed', 'failed', 'cancelled')
  AND (jsonb_array_length($2::jsonb) = 0
       OR id = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb))))
  AND ($3::text IS NULL OR function_id = $3)
  AND (jsonb_array_length($4::jsonb) = 0
       OR status = ANY(ARRAY(SELECT jsonb_array_elements_text($4::jsonb))))
  AND ($5::timestamptz IS NULL OR created_at < $5)
ORDER BY seq
LIMIT $6
FOR UPDATE;

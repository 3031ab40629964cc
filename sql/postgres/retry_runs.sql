-- Failed attempts that will be retried: the attempt goes up, the error is kept (a JSON array
-- of {id, error}; error is JSON text).
-- The id list again as an index condition: the planner's guess for a JSON recordset is 100 rows,
-- which makes a hash join over the whole table look cheaper than index lookups.
UPDATE runs r SET attempt = r.attempt + 1, error = x.error::jsonb, updated_at = $2
FROM jsonb_to_recordset($1::jsonb) AS x(id TEXT, error TEXT)
WHERE r.id = x.id
  AND r.id = ANY(ARRAY(SELECT y->>'id' FROM jsonb_array_elements($1::jsonb) y));

-- Runs reaching a terminal status, set-wise (a JSON array of {id, status, output, error};
-- output and error are JSON text, absent when SQL NULL).
-- The id list again as an index condition: the planner's guess for a JSON recordset is 100 rows,
-- which makes a hash join over the whole table look cheaper than index lookups.
UPDATE runs r
SET status = x.status, output = x.output::jsonb, error = x.error::jsonb, ended_at = $2, updated_at = $2
FROM jsonb_to_recordset($1::jsonb) AS x(id TEXT, status TEXT, output TEXT, error TEXT)
WHERE r.id = x.id
  AND r.id = ANY(ARRAY(SELECT y->>'id' FROM jsonb_array_elements($1::jsonb) y));

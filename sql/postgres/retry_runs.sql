-- Failed attempts that will be retried: the attempt goes up, the error is kept (a JSON array
-- of {id, error}; error is JSON text).
UPDATE runs r SET attempt = r.attempt + 1, error = x.error::jsonb, updated_at = $2
FROM jsonb_to_recordset($1::jsonb) AS x(id TEXT, error TEXT)
WHERE r.id = x.id;

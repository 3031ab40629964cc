-- Runs reaching a terminal status, set-wise (a JSON array of {id, status, output, error};
-- output and error are JSON text, absent when SQL NULL).
UPDATE runs r
SET status = x.status, output = x.output::jsonb, error = x.error::jsonb, ended_at = $2, updated_at = $2
FROM jsonb_to_recordset($1::jsonb) AS x(id TEXT, status TEXT, output TEXT, error TEXT)
WHERE r.id = x.id;

-- Run statuses, set-wise (a JSON array of {id, status}).
UPDATE runs r SET status = x.status, updated_at = $2
FROM jsonb_to_recordset($1::jsonb) AS x(id TEXT, status TEXT)
WHERE r.id = x.id;

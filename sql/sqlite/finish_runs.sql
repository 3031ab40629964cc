-- Runs reaching a terminal status, set-wise (a JSON array of {id, status, output, error};
-- output and error are JSON text, absent when SQL NULL).
UPDATE runs
SET status = json_extract(x.value, '$.status'), output = json_extract(x.value, '$.output'),
    error = json_extract(x.value, '$.error'), ended_at = ?2, updated_at = ?2
FROM json_each(?1) AS x
WHERE runs.id = json_extract(x.value, '$.id');

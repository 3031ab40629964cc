-- Failed attempts that will be retried: the attempt goes up, the error is kept (a JSON array
-- of {id, error}; error is JSON text).
UPDATE runs SET attempt = attempt + 1, error = json_extract(x.value, '$.error'), updated_at = ?2
FROM json_each(?1) AS x
WHERE runs.id = json_extract(x.value, '$.id');

-- Run statuses, set-wise (a JSON array of {id, status}).
UPDATE runs SET status = json_extract(x.value, '$.status'), updated_at = ?2
FROM json_each(?1) AS x
WHERE runs.id = json_extract(x.value, '$.id');

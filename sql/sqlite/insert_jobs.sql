-- The job rows of new runs (a JSON array of rows), due now (?2).
INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, concurrency_key, concurrency_limit,
                  created_at)
SELECT json_extract(value, '$.seq'), json_extract(value, '$.run_id'), json_extract(value, '$.env_id'),
       json_extract(value, '$.function_id'), json_extract(value, '$.state'), ?2,
       json_extract(value, '$.concurrency_key'), json_extract(value, '$.concurrency_limit'), ?2
FROM json_each(?1);

-- Which of these (environment, idempotency key) pairs (a JSON array) an event already holds.
SELECT e.env_id, e.idempotency_key
FROM json_each(?1) x
JOIN events e ON e.env_id = json_extract(x.value, '$.env_id')
             AND e.idempotency_key = json_extract(x.value, '$.key');

-- Which of these (environment, idempotency key) pairs (a JSON array) an event already holds.
SELECT e.env_id, e.idempotency_key
FROM jsonb_to_recordset($1::jsonb) AS x(env_id TEXT, key TEXT)
JOIN events e ON e.env_id = x.env_id AND e.idempotency_key = x.key;

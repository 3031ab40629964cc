-- The breaker row under a row lock, so one transition at a time across nodes.
SELECT env_id, function_id, endpoint, state, consecutive_fails, open_until, last_failure_at, last_error, updated_at
FROM circuit_breakers
WHERE env_id = $1 AND function_id = $2 AND endpoint = $3
FOR UPDATE;

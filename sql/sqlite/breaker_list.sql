SELECT env_id, function_id, endpoint, state, consecutive_fails, open_until, last_failure_at, last_error, updated_at
FROM circuit_breakers
WHERE env_id = ?1
ORDER BY function_id, endpoint;

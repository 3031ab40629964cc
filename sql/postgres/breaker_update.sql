UPDATE circuit_breakers
SET state = $4, consecutive_fails = $5, open_until = $6, last_failure_at = $7, last_error = $8, updated_at = $9
WHERE env_id = $1 AND function_id = $2 AND endpoint = $3;

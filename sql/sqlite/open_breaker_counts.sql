-- Circuit breakers not closed (open or half-open), per environment.
SELECT env_id, COUNT(*) AS count FROM circuit_breakers WHERE state <> 'closed' GROUP BY env_id ORDER BY env_id;

-- Creates a closed breaker so a transition has a row to lock (no-op when it exists).
INSERT INTO circuit_breakers (env_id, function_id, endpoint, state, consecutive_fails, updated_at)
VALUES (?1, ?2, ?3, 'closed', 0, ?4)
ON CONFLICT (env_id, function_id, endpoint) DO NOTHING;

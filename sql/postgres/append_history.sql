INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, event_id, payload)
VALUES ($1, $2, $3, $4, $5, $6, $7);

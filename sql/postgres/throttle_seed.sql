-- A throttle key's window row, made empty the first time the key is seen.
INSERT INTO throttle_windows (env_id, function_id, throttle_key, starts)
VALUES ($1, $2, $3, '[]') ON CONFLICT DO NOTHING;

-- `ironflow bench --backlog`: history rows n = $3..=$4, spread over the $2 backlog runs of the
-- function $1, at $5.
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, payload)
SELECT $5, f.env_id, 'step.completed', f.id || '-' || (1 + g % $2), f.id, '{"seeded": true}'::jsonb
FROM functions f, generate_series($3::bigint, $4::bigint) AS g
WHERE f.id = $1;

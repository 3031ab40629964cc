-- `ironflow bench --backlog`: the queued job rows of the runs n = $2..=$3 of the function $1,
-- due at $4.
INSERT INTO jobs (seq, run_id, env_id, function_id, state, due_at, created_at)
SELECT r.seq, r.id, r.env_id, r.function_id, 'queued', $4, $4
FROM generate_series($2::bigint, $3::bigint) AS g
JOIN runs r ON r.id = $1 || '-' || g;

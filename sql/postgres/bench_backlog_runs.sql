-- `ironflow bench --backlog`: queued runs n = $2..=$3 of the function $1 (ids `$1-n`), at $4;
-- their job rows follow (bench_backlog_jobs).
INSERT INTO runs (id, env_id, function_id, function_version, status, input, max_attempts,
                  created_at, updated_at, attempt)
SELECT f.id || '-' || g, f.env_id, f.id, f.version, 'running', '{}'::jsonb, 3, $4, $4, 1
FROM functions f, generate_series($2::bigint, $3::bigint) AS g
WHERE f.id = $1;

-- `ironflow bench --backlog`: queued runs n = ?2..=?3 of the function ?1 (ids `?1-n`), at ?4;
-- their job rows follow (bench_backlog_jobs).
WITH RECURSIVE g(n) AS (SELECT ?2 UNION ALL SELECT n + 1 FROM g WHERE n < ?3)
INSERT INTO runs (id, env_id, function_id, function_version, status, input, max_attempts,
                  created_at, updated_at, attempt)
SELECT f.id || '-' || g.n, f.env_id, f.id, f.version, 'running', '{}', 3, ?4, ?4, 1
FROM functions f, g
WHERE f.id = ?1;

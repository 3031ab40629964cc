-- `ironflow bench --backlog`: history rows n = ?3..=?4, spread over the ?2 backlog runs of the
-- function ?1, at ?5.
WITH RECURSIVE g(n) AS (SELECT ?3 UNION ALL SELECT n + 1 FROM g WHERE n < ?4)
INSERT INTO history (recorded_at, env_id, kind, run_id, function_id, payload)
SELECT ?5, f.env_id, 'step.completed', f.id || '-' || (1 + g.n % ?2), f.id, '{"seeded": true}'
FROM functions f, g
WHERE f.id = ?1;

-- Jobs per function (every function, zeros included): ready to claim at ?2, due later, leased.
-- ?1: one environment, or NULL for all (the gauges).
SELECT f.env_id, f.id AS function_id,
       COALESCE(SUM(CASE WHEN j.state = 'queued' AND j.due_at <= ?2 THEN 1 ELSE 0 END), 0) AS ready,
       COALESCE(SUM(CASE WHEN j.state = 'queued' AND j.due_at > ?2 THEN 1 ELSE 0 END), 0) AS scheduled,
       COALESCE(SUM(CASE WHEN j.state = 'leased' THEN 1 ELSE 0 END), 0) AS leased
FROM functions f
LEFT JOIN jobs j ON j.env_id = f.env_id AND j.function_id = f.id
WHERE (?1 IS NULL OR f.env_id = ?1) AND f.status <> 'archived'
GROUP BY f.env_id, f.id
ORDER BY f.env_id, f.id;

-- INDEXED BY: see count_lane_active.
SELECT run_id FROM jobs INDEXED BY jobs_lane
WHERE env_id = ?1 AND function_id = ?2 AND concurrency_key = ?3 AND state = 'blocked'
ORDER BY seq
LIMIT ?4;

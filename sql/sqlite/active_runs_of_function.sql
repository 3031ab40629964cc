SELECT id, input FROM runs
WHERE env_id = ?1 AND function_id = ?2 AND status IN ('running', 'waiting', 'waiting_for_capacity', 'paused')
ORDER BY seq
LIMIT 10000;

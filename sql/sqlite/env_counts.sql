SELECT
    (SELECT COUNT(*) FROM functions WHERE env_id = ?1 AND status = 'active') AS functions,
    (SELECT COUNT(*) FROM runs WHERE env_id = ?1 AND status IN ('running', 'waiting', 'waiting_for_capacity', 'paused')) AS active_runs;

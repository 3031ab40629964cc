SELECT
    (SELECT COUNT(*) FROM functions WHERE env_id = ?1) AS functions,
    (SELECT COUNT(*) FROM runs WHERE env_id = ?1) AS runs,
    (SELECT COUNT(*) FROM runs WHERE env_id = ?1
        AND status NOT IN ('completed', 'failed', 'cancelled')) AS unfinished_runs,
    (SELECT COUNT(*) FROM events WHERE env_id = ?1) AS events,
    (SELECT COUNT(*) FROM jobs WHERE env_id = ?1) AS jobs,
    (SELECT COUNT(*) FROM secrets WHERE env_id = ?1) AS secrets,
    (SELECT COUNT(*) FROM api_keys WHERE env_id = ?1 AND revoked_at IS NULL) AS keys;

-- The newest ?2 runs of an environment (a bounded scan of runs_env_seq), those dispatched.
SELECT created_at, started_at FROM (
    SELECT created_at, started_at FROM runs WHERE env_id = ?1 ORDER BY seq DESC LIMIT ?2
) newest
WHERE started_at IS NOT NULL;

-- INDEXED BY: runs without an event (invoked, direct) have a NULL event_id, which ANALYZE counts
-- as one value, so the planner could take runs_env_seq (a scan of the environment) instead.
SELECT id FROM runs INDEXED BY runs_event WHERE env_id = ?1 AND event_id = ?2 ORDER BY seq;

-- The dispatch ids of leased jobs, in an index of their own. Every queued job has a NULL
-- dispatch_id, and ANALYZE counts NULLs as one value: with a deep queue, the statistics of the
-- UNIQUE index on dispatch_id say one id matches the whole queue, and the planner scans jobs
-- for every report. Here only non-NULL ids are counted, so the lookup stays an index probe.
CREATE INDEX jobs_dispatch ON jobs (dispatch_id) WHERE dispatch_id IS NOT NULL;

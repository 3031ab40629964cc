-- INDEXED BY: with one deep queue the statistics say a lane holds the whole queue, and the
-- planner would scan jobs instead.
SELECT COUNT(*) FROM jobs INDEXED BY jobs_lane
WHERE env_id = ?1 AND function_id = ?2 AND concurrency_key = ?3 AND state <> 'blocked'
  AND COALESCE(resume_state, '') <> 'blocked';

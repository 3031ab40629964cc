-- The oldest runs waiting for capacity in a lane. Rows another transaction holds (a cancel of
-- that run) are skipped, so a promotion never waits on a job row while holding the lane lock.
SELECT run_id FROM jobs
WHERE env_id = $1 AND function_id = $2 AND concurrency_key = $3 AND state = 'blocked'
ORDER BY seq
LIMIT $4
FOR UPDATE SKIP LOCKED;

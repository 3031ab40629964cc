-- A batch of reports locks every job row it names at once, in run order: the one order in
-- which every transaction takes job rows, so two batches (or a batch and a heartbeat, a cancel
-- or the timer) cannot deadlock. $1 is a JSON array of dispatch ids.
SELECT run_id
FROM jobs
WHERE dispatch_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
ORDER BY run_id
FOR UPDATE;

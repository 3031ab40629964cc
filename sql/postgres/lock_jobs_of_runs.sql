-- Job rows of several runs (a JSON array of run ids), locked in run order: the order every
-- transaction takes job rows in.
SELECT run_id FROM jobs
WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))
ORDER BY run_id
FOR UPDATE;

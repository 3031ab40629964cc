-- The job rows of runs that ended (a JSON array of run ids).
DELETE FROM jobs WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));

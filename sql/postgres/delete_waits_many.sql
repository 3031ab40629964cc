-- The waits of runs that ended (a JSON array of run ids).
DELETE FROM waits WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));

-- The sleeping steps of runs dispatched again are over (a JSON array of run ids).
UPDATE steps SET status = 'completed', ended_at = $2, updated_at = $2
WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb))) AND status = 'sleeping';

-- A run's history entries about the given steps (a JSON array of step ids), locked to rewrite.
SELECT seq, payload FROM history
WHERE run_id = $1 AND payload->>'step_id' = ANY(ARRAY(SELECT jsonb_array_elements_text($2::jsonb)))
ORDER BY seq
FOR UPDATE;

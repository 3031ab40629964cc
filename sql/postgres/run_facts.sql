-- What the lifecycle decisions need of several runs (a JSON array of run ids), with their
-- function's current definition.
SELECT r.id, r.env_id, r.function_id, r.status, r.attempt, r.max_attempts, r.input,
       r.parent_run_id, r.parent_step_id, r.event_id, r.pause_requested, r.created_at AS run_created_at, f.definition
FROM runs r
LEFT JOIN functions f ON f.env_id = r.env_id AND f.id = r.function_id
WHERE r.id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));

-- Group commit of step checkpoints: a checkpoint renews its dispatch's lease (a JSON array of
-- run ids, the primary key, so each row is found by index however bloated the queue is).
UPDATE jobs SET lease_expires_at = $2
WHERE run_id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)));

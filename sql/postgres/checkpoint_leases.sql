-- Group commit of step checkpoints: a checkpoint renews its dispatch's lease (a JSON array of ids).
UPDATE jobs SET lease_expires_at = $2
WHERE dispatch_id IN (SELECT jsonb_array_elements_text($1::jsonb));

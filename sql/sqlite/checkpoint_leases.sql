-- Group commit of step checkpoints: a checkpoint renews its dispatch's lease (a JSON array of ids).
UPDATE jobs SET lease_expires_at = ?2
WHERE dispatch_id IN (SELECT value FROM json_each(?1));

-- Group commit of step checkpoints: a checkpoint renews its dispatch's lease (a JSON array of
-- run ids, the primary key).
UPDATE jobs SET lease_expires_at = ?2
WHERE run_id IN (SELECT value FROM json_each(?1));

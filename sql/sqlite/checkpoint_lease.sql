-- A checkpoint keeps its dispatch's lease at least two thirds of the TTL away: renewed to ?2
-- only when it would end before ?3, so most checkpoints write nothing to the job row.
UPDATE jobs SET lease_expires_at = ?2 WHERE run_id = ?1 AND lease_expires_at < ?3;

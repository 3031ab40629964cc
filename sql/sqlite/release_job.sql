-- Gives a claimed push job back unsent (its breaker opened meanwhile): queued again, still due,
-- no attempt used. Only under the dispatch's fence.
UPDATE jobs
SET state = 'queued', lease_token = NULL, worker_id = NULL, lease_expires_at = NULL
WHERE dispatch_id = ?1 AND execution_seq = ?2 AND lease_token = ?3 AND state = 'leased'
  AND env_id = ?4 AND worker_id = ?5;

-- How far the open stream has delivered (for the redelivery count).
UPDATE projections SET delivered_seq = MAX(delivered_seq, ?3)
WHERE env_id = ?1 AND name = ?2;

-- Deliveries due again that already used every allowed delivery become dead letters.
UPDATE group_deliveries SET state = 'dead', consumer_id = NULL, claim_token = NULL
WHERE group_id = ?1 AND state IN ('pending', 'inflight') AND due_at <= ?2 AND attempts >= ?3;

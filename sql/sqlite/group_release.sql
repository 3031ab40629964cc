-- A member left: what it held goes back to the group at once.
UPDATE group_deliveries SET state = 'pending', consumer_id = NULL, claim_token = NULL, due_at = ?3
WHERE group_id = ?1 AND consumer_id = ?2 AND state = 'inflight';

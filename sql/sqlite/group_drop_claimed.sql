-- Auto-ack groups: what was handed out is done.
DELETE FROM group_deliveries WHERE group_id = ?1 AND claim_token = ?2;

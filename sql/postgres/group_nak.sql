-- Hands the message back for redelivery at $3.
UPDATE group_deliveries SET state = 'pending', consumer_id = NULL, claim_token = NULL, due_at = $3
WHERE group_id = $1 AND state = 'inflight'
  AND message_seq = (SELECT seq FROM messages WHERE id = $2);

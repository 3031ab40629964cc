-- The messages one claim took, in order.
SELECT d.message_seq, d.attempts, m.id, m.topic, m.data, m.published_at
FROM group_deliveries d JOIN messages m ON m.seq = d.message_seq
WHERE d.group_id = $1 AND d.claim_token = $2
ORDER BY d.message_seq;

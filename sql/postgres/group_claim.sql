-- Takes up to $5 due deliveries (pending, or in flight past their ack deadline) in order.
UPDATE group_deliveries
SET state = 'inflight', attempts = attempts + 1, consumer_id = $3, due_at = $4, claim_token = $6
WHERE group_id = $1 AND message_seq IN (
    SELECT message_seq FROM group_deliveries
    WHERE group_id = $1 AND state IN ('pending', 'inflight') AND due_at <= $2
    ORDER BY message_seq
    LIMIT $5
    FOR UPDATE SKIP LOCKED
);

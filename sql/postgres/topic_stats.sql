-- One topic's message count, first and last sequence, and the consumer groups' deliveries of it
-- not yet acked (dead letters not counted): its lag.
SELECT COUNT(*) AS message_count, MIN(seq) AS first_seq, MAX(seq) AS last_seq,
       (SELECT COUNT(*) FROM group_deliveries d JOIN messages m ON m.seq = d.message_seq
        WHERE m.env_id = $1 AND m.topic = $2 AND d.state <> 'dead') AS lag
FROM messages WHERE env_id = $1 AND topic = $2;

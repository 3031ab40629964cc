-- Queues a stored message for a group (skipped if the group was deleted meanwhile).
INSERT INTO group_deliveries (group_id, message_seq, state, attempts, due_at)
SELECT id, $2, 'pending', 0, $3 FROM consumer_groups WHERE id = $1;

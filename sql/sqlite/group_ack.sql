DELETE FROM group_deliveries
WHERE group_id = ?1 AND state = 'inflight'
  AND message_seq = (SELECT seq FROM messages WHERE id = ?2);

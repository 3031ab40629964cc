UPDATE group_deliveries SET state = 'dead', consumer_id = NULL, claim_token = NULL
WHERE group_id = $1 AND state = 'inflight'
  AND message_seq = (SELECT seq FROM messages WHERE id = $2);

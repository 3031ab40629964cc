SELECT id, seq FROM messages WHERE env_id = ?1 AND idempotency_key = ?2;

SELECT id FROM events WHERE env_id = ?1 AND idempotency_key = ?2;

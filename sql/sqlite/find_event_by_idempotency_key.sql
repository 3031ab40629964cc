SELECT id, seq, entity_version FROM events WHERE env_id = ?1 AND idempotency_key = ?2;

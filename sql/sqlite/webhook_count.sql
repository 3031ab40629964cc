SELECT COUNT(*) FROM webhook_sources WHERE env_id = ?1;

DELETE FROM webhook_sources WHERE env_id = ?1 AND id = ?2;

UPDATE workers SET last_heartbeat_at = ?3 WHERE env_id = ?1 AND id = ?2;

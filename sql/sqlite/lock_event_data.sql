SELECT data FROM events WHERE env_id = ?1 AND id = ?2;

SELECT data, entity_id, entity_version FROM events WHERE env_id = ?1 AND id = ?2;

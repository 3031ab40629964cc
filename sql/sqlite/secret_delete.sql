DELETE FROM secrets WHERE env_id = ?1 AND name = ?2;

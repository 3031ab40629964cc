SELECT status FROM runs WHERE env_id = ?1 AND id = ?2;

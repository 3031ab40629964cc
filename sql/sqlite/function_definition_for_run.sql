SELECT f.definition FROM functions f JOIN runs r ON r.env_id = f.env_id AND r.function_id = f.id WHERE r.id = ?1;

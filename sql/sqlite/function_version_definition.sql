SELECT definition FROM function_versions WHERE env_id = ?1 AND function_id = ?2 AND version = ?3;

DELETE FROM function_versions WHERE env_id = $1 AND function_id = $2;

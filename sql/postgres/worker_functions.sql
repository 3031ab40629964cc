SELECT function_ids FROM workers WHERE env_id = $1 AND id = $2;

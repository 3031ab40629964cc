DELETE FROM functions WHERE env_id = $1 AND id = $2;

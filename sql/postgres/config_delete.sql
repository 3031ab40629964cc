DELETE FROM configs WHERE env_id = $1 AND name = $2;

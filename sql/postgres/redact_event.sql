UPDATE events SET data = $3 WHERE env_id = $1 AND id = $2;

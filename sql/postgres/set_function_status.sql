UPDATE functions SET status = $3, updated_at = $4 WHERE env_id = $1 AND id = $2;

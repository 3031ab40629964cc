UPDATE jobs SET lease_expires_at = $2 WHERE run_id = $1;

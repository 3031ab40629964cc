UPDATE jobs SET timeout_at = ?2 WHERE run_id = ?1 AND timeout_at IS NULL;

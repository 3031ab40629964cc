DELETE FROM waits WHERE run_id = ?1 AND step_id = ?2;

DELETE FROM waits WHERE run_id = ?1;

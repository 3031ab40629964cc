SELECT step_id, status, output, error FROM steps WHERE run_id = ?1 AND step_id = ?2;

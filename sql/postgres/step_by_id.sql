SELECT step_type, status FROM steps WHERE run_id = $1 AND step_id = $2;

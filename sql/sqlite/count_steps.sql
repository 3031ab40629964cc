SELECT COUNT(*) FROM steps WHERE run_id = ?1;

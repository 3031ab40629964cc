DELETE FROM steps WHERE run_id = $1 AND sequence >= $2;

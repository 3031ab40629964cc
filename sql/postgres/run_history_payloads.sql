SELECT seq, payload FROM history WHERE run_id = $1 ORDER BY seq FOR UPDATE;

SELECT step_id, step_type FROM steps WHERE run_id = $1 AND status = 'waiting'
ORDER BY sequence DESC
LIMIT 1;
